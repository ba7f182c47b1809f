"""The public surface of the mesh: the gRPC methods in the descriptor set, their HTTP rules
(`google.api.http`), and gateway/routes.yaml (which methods are public, anonymous,
internal-only, and their per-route options).

The one model that gateway/render.py (Envoy's configuration) and gateway/openapi.py
(/openapi.json) both read, so neither imports the other for it.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from services.common.internal_methods import edge_keys as internal_method_keys

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTORS = ROOT / "build" / "descriptors.binpb"
ROUTES = Path(__file__).resolve().parent / "routes.yaml"


@dataclass(frozen=True)
class HttpRule:
    verb: str  # GET, POST, DELETE, PATCH, PUT
    template: str  # /v1/results/{result_id}
    body: str = ""
    response_body: str = ""


@dataclass(frozen=True)
class Method:
    package: str
    service: str  # fully qualified
    name: str
    has_http: bool
    rules: tuple[HttpRule, ...] = ()
    input_type: str = ""
    output_type: str = ""
    idempotency: int = 0  # MethodOptions.IdempotencyLevel
    client_streaming: bool = False
    server_streaming: bool = False

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def key(self) -> str:
        return f"{self.service}/{self.name}"


def _rules(http: Any) -> list[HttpRule]:
    out = []
    pattern = http.WhichOneof("pattern")
    if pattern == "custom":
        out.append(HttpRule(http.custom.kind.upper(), http.custom.path, http.body))
    elif pattern:
        out.append(HttpRule(pattern.upper(), getattr(http, pattern), http.body, http.response_body))
    for extra in http.additional_bindings:
        out.extend(_rules(extra))
    return out


def load_methods(descriptor_set: Path) -> list[Method]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    methods = []
    for file in fds.file:
        if not file.package.startswith("samhandling."):
            continue
        for service in file.service:
            for m in service.method:
                has_http = m.options.HasExtension(annotations_pb2.http)
                rules = (
                    tuple(_rules(m.options.Extensions[annotations_pb2.http])) if has_http else ()
                )
                methods.append(
                    Method(
                        file.package,
                        f"{file.package}.{service.name}",
                        m.name,
                        has_http,
                        rules,
                        m.input_type.lstrip("."),
                        m.output_type.lstrip("."),
                        m.options.idempotency_level,
                        m.client_streaming,
                        m.server_streaming,
                    )
                )
    return methods


def template_regex(template: str) -> str | None:
    """RE2 regex for a google.api.http path template, or None when it has no variables."""
    path, verb = split_template(template)
    if "{" not in path and "*" not in path:
        return None
    regex = "/" + "/".join(_segment_regex(s) for s in _segments(path))
    if verb:
        regex += ":" + re.escape(verb)
    return "^" + regex + "$"


def _split_verb(template: str) -> tuple[str, str, str]:
    # The verb is a ':' after the last '}' or '/', outside braces.
    depth = 0
    for i in range(len(template) - 1, -1, -1):
        c = template[i]
        if c == "}":
            depth += 1
        elif c == "{":
            depth -= 1
        elif c == "/" and depth == 0:
            break
        elif c == ":" and depth == 0:
            return template[:i], ":", template[i + 1 :]
    return template, "", ""


def _segments(path: str) -> list[str]:
    segments, depth, current = [], 0, ""
    for c in path.lstrip("/"):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "/" and depth == 0:
            segments.append(current)
            current = ""
        else:
            current += c
    segments.append(current)
    return segments


def _segment_regex(segment: str) -> str:
    if segment == "*":
        return "[^/]+"
    if segment == "**":
        return ".+"
    if segment.startswith("{") and segment.endswith("}"):
        inner = segment[1:-1]
        if "=" not in inner:
            return "[^/]+"
        return "/".join(_segment_regex(s) for s in inner.split("=", 1)[1].split("/"))
    return re.escape(segment)


def split_template(template: str) -> tuple[str, str]:
    """(path, verb) of a template: '/v1/results:search' -> ('/v1/results', 'search')."""
    path, _, verb = _split_verb(template)
    return path, verb


@dataclass
class EdgeSpec:
    """routes.yaml, parsed and merged with overrides."""

    defaults: dict[str, Any]
    packages: dict[str, dict[str, Any]]
    methods: dict[str, dict[str, Any]]
    internal_only: set[str]
    anonymous: set[str]
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, routes_file: Path, overrides: dict[str, Any] | None = None) -> EdgeSpec:
        raw = _deep_merge(yaml.safe_load(routes_file.read_text()), overrides or {})
        defaults = raw.get("defaults", {})
        return cls(
            defaults=defaults,
            packages={p: {**defaults, **(o or {})} for p, o in raw["packages"].items()},
            methods=dict(raw.get("methods") or {}),
            # Internal methods are declared once, with their callers, in the registry.
            internal_only=set(raw.get("internal_only") or []) | internal_method_keys(),
            anonymous=set(raw.get("anonymous") or []),
            raw=raw,
        )

    def is_public(self, m: Method) -> bool:
        return (
            m.has_http
            and m.key not in self.internal_only
            and f"{m.service}/*" not in self.internal_only
        )

    def is_anonymous(self, m: Method, rule: HttpRule) -> bool:
        return rule.template in self.anonymous or m.key in self.anonymous

    def options(self, m: Method) -> dict[str, Any]:
        return {**self.packages[m.package], **(self.methods.get(m.key) or {})}

    def resilience_for(self, cluster: str) -> dict[str, Any]:
        """`resilience` with the package's own `circuit_breaker` values over the defaults."""
        resilience = copy.deepcopy(self.raw.get("resilience", {}))
        for package, options in self.packages.items():
            if cluster_name(package) == cluster and "circuit_breaker" in options:
                resilience["circuit_breaker"] = {
                    **resilience.get("circuit_breaker", {}),
                    **options["circuit_breaker"],
                }
        return resilience

    def route_metadata(self, m: Method) -> dict[str, str]:
        """What the rate-limit actions read from a method's routes: `route` (the method has
        a per-client limit of its own) and `anonymous: token` (the anonymous token bucket)."""
        metadata = {}
        if "rate_limit" in (self.methods.get(m.key) or {}):
            metadata["route"] = m.key
        token_paths = set(self.raw.get("rate_limit", {}).get("anonymous_token_paths") or [])
        if any(rule.template in token_paths for rule in m.rules):
            metadata["anonymous"] = "token"
        return metadata

    def is_idempotent(self, m: Method, rule: HttpRule) -> bool:
        explicit = (self.methods.get(m.key) or {}).get("idempotent")
        if explicit is not None:
            return bool(explicit)
        idempotent_levels = (
            descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
            descriptor_pb2.MethodOptions.IDEMPOTENT,
        )
        return (
            rule.verb == "GET"
            or split_template(rule.template)[1] == "search"
            or m.idempotency in idempotent_levels
        )


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def cluster_name(package: str) -> str:
    """The service (and Envoy cluster) a proto package belongs to: samhandling.<name>.v1."""
    return package.split(".")[1]
