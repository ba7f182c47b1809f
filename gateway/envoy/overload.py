"""The edge protects itself: a ceiling on open downstream connections and a fixed heap
budget (the overload manager), and free memory handed back to the system promptly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.envoy.common import TYPES

_HEAP = "envoy.resource_monitors.fixed_heap"


def overload_manager(limits: Mapping[str, Any]) -> dict[str, Any]:
    """At most 10,000 downstream connections across both listeners, and a fixed heap budget
    (routes.yaml `limits.max_heap_bytes`): near it the streams holding the most buffered
    memory are reset, then new requests get 503, and free memory is returned to the
    system; the edge sheds load before it runs out of memory."""
    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": f"{TYPES}.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": 10000,
                },
            },
            {
                "name": _HEAP,
                "typed_config": {
                    "@type": f"{TYPES}.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    "max_heap_size_bytes": int(limits.get("max_heap_bytes", 268435456)),
                },
            },
        ],
        # Streams are tracked for reset_high_memory_stream from 1 MiB of buffered data on.
        "buffer_factory_config": {"minimum_account_to_track_power_of_two": 20},
        "actions": [
            {"name": "envoy.overload_actions.shrink_heap", "triggers": _heap_at(0.8)},
            {
                "name": "envoy.overload_actions.reset_high_memory_stream",
                "triggers": [
                    {
                        "name": _HEAP,
                        "scaled": {"scaling_threshold": 0.85, "saturation_threshold": 0.95},
                    }
                ],
            },
            {"name": "envoy.overload_actions.stop_accepting_requests", "triggers": _heap_at(0.95)},
        ],
    }


def _heap_at(value: float) -> list[dict[str, Any]]:
    return [{"name": _HEAP, "threshold": {"value": value}}]


def memory_allocator_manager() -> dict[str, Any]:
    """Free memory goes back to the system every half second (tcmalloc keeps what a burst
    of streamed uploads freed otherwise: resident memory stayed ~300 MB afterwards)."""
    return {"bytes_to_release": 134217728, "memory_release_interval": "0.5s"}
