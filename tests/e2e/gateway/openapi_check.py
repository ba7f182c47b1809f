"""Check an OpenAPI document against a live edge: every operation reaches a route.

Each operation is called with placeholder path parameters, an empty JSON body and a token
for the operation's service; whatever the service answers (even 400/403/404 from the
service), it must not be the edge's catch-all 404.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import requests

CATCH_ALL = "no such route at the Samhandling edge"


def edge_rejection(reply: requests.Response) -> bool:
    """True when Envoy itself answered (its local replies carry ErrorInfo source=edge)."""
    try:
        details = reply.json().get("details", [])
    except (ValueError, AttributeError):
        return False
    return any(
        isinstance(d, dict) and d.get("metadata", {}).get("source") == "edge" for d in details
    )


def unrouted_operations(
    base_url: str,
    document: dict[str, Any],
    token_for: Callable[[str], str | None],
    require_upstream: bool = False,
) -> list[str]:
    """`token_for(service_short_name)` returns an access token (or None for no header).

    With `require_upstream`, an operation also fails when the edge itself refused the call
    (a token check, a body limit): the call must have reached the service.
    """
    missing = []
    for path, operations in document["paths"].items():
        url = base_url + re.sub(r"\{[^}]+\}", "placeholder-1", path)
        for verb, op in operations.items():
            service = op["x-grpc-method"].split(".")[1]
            token = None if op.get("security") == [] else token_for(service)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            body = op.get("requestBody", {}).get("content", {})
            kwargs: dict[str, Any] = {}
            if "application/json" in body:
                schema = body["application/json"].get("schema", {})
                kwargs["json"] = [{}] if schema.get("type") == "array" else {}
            elif body:
                kwargs["data"] = b""
                headers["content-type"] = "application/x-www-form-urlencoded"
            reply = requests.request(
                verb.upper(), url, headers=headers, timeout=15, allow_redirects=False, **kwargs
            )
            if reply.status_code == 404 and CATCH_ALL in reply.text:
                missing.append(f"{verb.upper()} {path}")
            elif require_upstream and edge_rejection(reply):
                missing.append(f"{verb.upper()} {path} (refused at the edge: {reply.text[:200]})")
    return missing
