"""Counting the calls a service makes to a peer, without replacing the peer: a client
interceptor on the real channel notes (method, patient_id) of each unary call and passes it
on. For tests of how many round trips an operation costs (e.g. one privacy call per read,
issue 15)."""

from __future__ import annotations

from typing import Any

import grpc


class CallCounter(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.rsplit("/", 1)[-1]
        self.calls.append((method, str(getattr(request, "patient_id", ""))))
        return continuation(details, request)

    def wrap(self, channel: grpc.Channel) -> grpc.Channel:
        return grpc.intercept_channel(channel, self)

    def methods(self, patient: str = "", only: tuple[str, ...] = ()) -> list[str]:
        """The methods called (for `patient`, if given), in order; `only` these, if given."""
        return [
            method
            for method, pid in self.calls
            if (not patient or pid == patient) and (not only or method in only)
        ]
