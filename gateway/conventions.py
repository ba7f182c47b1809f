"""Partner conventions at the edge that Envoy's filters cannot express on their own: two
small Lua filters (gateway/lua/) and the per-route metadata they read.

- `samhandling.conventions` (first filter): REST responses lose `grpc-*` headers, a route's
  `success_status` (PAR: 201) and `redirect_status` (the TestID login: 303 when the service
  sends a `Location`) replace the transcoder's 200, so does a status the service names in
  `x-samhandling-http-status` when the route's `service_status` lists it (FHIR Bulk Data's
  202 / 500), a 413 names the route's body limit
  (`max_request_bytes`), an unknown query parameter's 400 gets a `google.rpc.BadRequest`
  field violation like an unknown body field's, every 401 gets an RFC 6750 / RFC 9449
  `WWW-Authenticate` challenge, every 429 and 503 a `Retry-After`, anonymous routes drop the
  `Authorization` header, and the path the access log and the edge's span show has no query
  string and no identity number.
  FHIR (`/v1/fhir/...`): a route's `query_header` moves the query string into that header
  (FHIR search parameters need no proto fields; the service decides which it accepts), and
  every error answer becomes an `OperationOutcome` (`application/fhir+json`), Envoy's own
  400/401/404/413/429/503 included.
- `samhandling.conventions.body` (just before the transcoder): unknown JSON body fields are a 400
  naming the field, checked against the request messages in the descriptor set.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor_pb2

if TYPE_CHECKING:
    from gateway.openapi import Descriptors
    from gateway.surface import EdgeSpec, HttpRule, Method

FDP = descriptor_pb2.FieldDescriptorProto
LUA_DIR = Path(__file__).resolve().parent / "lua"
NAMESPACE = "samhandling.conventions"  # dynamic metadata (path, scheme, unknown_field)
CONVENTIONS_FILTER = "samhandling.conventions"
BODY_FILTER = "samhandling.conventions.body"
HTTP_BODY = "google.api.HttpBody"
# Well-known types whose JSON form is not an object of their fields.
_OPAQUE_PREFIX = "google.protobuf."

_TYPES = "type.googleapis.com/envoy"


def body_message(m: Method, rule: HttpRule, descriptors: Descriptors) -> str | None:
    """The message a REST rule's JSON body holds, or None (no body, raw HttpBody, scalar)."""
    if not rule.body or m.input_type == HTTP_BODY:
        return None
    if rule.body == "*":
        return m.input_type
    message = descriptors.messages.get(m.input_type)
    field = next((f for f in message.field if f.name == rule.body), None) if message else None
    if field is None or field.type != FDP.TYPE_MESSAGE:
        return None
    name = field.type_name.lstrip(".")
    if name == HTTP_BODY or name.startswith(_OPAQUE_PREFIX):
        return None
    return name


def _value_spec(field: descriptor_pb2.FieldDescriptorProto, descriptors: Descriptors) -> Any:
    if field.type != FDP.TYPE_MESSAGE:
        return True
    name = field.type_name.lstrip(".")
    entry = descriptors.messages.get(name)
    if entry is not None and entry.options.map_entry:
        value = next(f for f in entry.field if f.name == "value")
        inner = _value_spec(value, descriptors)
        return True if inner is True else {"map": inner}
    if name.startswith(_OPAQUE_PREFIX) and name != "google.protobuf.Empty":
        return True
    return name


def schema(roots: set[str], descriptors: Descriptors) -> dict[str, dict[str, Any]]:
    """message -> JSON key (proto name and lowerCamel json_name) -> value spec, for every
    message reachable from `roots`."""
    out: dict[str, dict[str, Any]] = {}
    pending = sorted(roots)
    while pending:
        name = pending.pop()
        if name in out or name not in descriptors.messages:
            continue
        keys: dict[str, Any] = {}
        for f in descriptors.messages[name].field:
            spec = _value_spec(f, descriptors)
            keys[f.name] = spec
            keys[f.json_name or f.name] = spec
            inner = spec["map"] if isinstance(spec, dict) else spec
            if isinstance(inner, str):
                pending.append(inner)
        out[name] = keys
    return out


def field_names(roots: dict[str, dict[str, Any]], descriptors: Descriptors) -> dict[str, str]:
    return {
        name: ", ".join(f.name for f in descriptors.messages[name].field) for name in sorted(roots)
    }


def lua_literal(value: Any) -> str:
    """A Lua table constructor for JSON-like data (string keys, str/bool/int/dict values)."""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, dict):
        items = ",".join(f"[{lua_literal(k)}]={lua_literal(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise TypeError(f"no Lua literal for {value!r}")


def _lua_filter(name: str, source: str) -> dict[str, Any]:
    return {
        "name": name,
        "typed_config": {
            "@type": f"{_TYPES}.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": source},
        },
    }


def conventions_filter(
    realm: str, max_request_bytes: int = 1048576, retry_after_seconds: int = 1
) -> dict[str, Any]:
    """`max_request_bytes`: the default body limit a 413 names (routes with their own limit
    carry it in their metadata); `retry_after_seconds`: the `Retry-After` every 429 and 503
    gets unless it has one."""
    from services.common.dpop import DPOP_ALGORITHMS
    from services.common.logging import MASK

    source = (LUA_DIR / "conventions.lua").read_text()
    for placeholder, value in (
        ("__MASK__", MASK),
        ("__DPOP_ALGS__", " ".join(DPOP_ALGORITHMS)),
        ("__REALM__", realm),
        ("__MAX_REQUEST_BYTES__", str(max_request_bytes)),
        ("__RETRY_AFTER__", str(int(retry_after_seconds))),
    ):
        source = source.replace(placeholder, value.replace('"', ""))
    return _lua_filter(CONVENTIONS_FILTER, source)


def body_filter(
    bodies: set[str], descriptors: Descriptors, hints: dict[str, dict[str, list[str]]]
) -> dict[str, Any]:
    tables = schema(bodies, descriptors)
    source = (LUA_DIR / "body_fields.lua").read_text()
    source = source.replace("__SCHEMA__", lua_literal(tables))
    source = source.replace("__FIELDS__", lua_literal(field_names(tables, descriptors)))
    quoted = {
        message: {wrong: " and ".join(f'"{n}"' for n in right) for wrong, right in names.items()}
        for message, names in hints.items()
    }
    source = source.replace("__HINTS__", lua_literal(quoted))
    return _lua_filter(BODY_FILTER, source)


def route_metadata(
    m: Method, rule: HttpRule, spec: EdgeSpec, descriptors: Descriptors
) -> dict[str, Any]:
    """Route metadata for the two Lua filters (each reads the entry under its own name)."""
    options = spec.options(m)
    conventions: dict[str, Any] = {}
    if spec.is_anonymous(m, rule):
        conventions["anonymous"] = True
    for key in ("success_status", "redirect_status"):
        if options.get(key):
            conventions[key] = int(options[key])
    if options.get("service_status"):
        # Statuses the service may pick itself with the `x-samhandling-http-status` response
        # header (FHIR Bulk Data: 202 while an export runs); others are ignored.
        conventions["service_status"] = ",".join(str(int(v)) for v in options["service_status"])
    limit = int(options.get("max_request_bytes") or 0)
    if limit and limit != int(spec.defaults.get("max_request_bytes") or 0):
        conventions["max_request_bytes"] = limit  # else the filter's default
    if options.get("query_header"):
        conventions["query_header"] = str(options["query_header"])
    request = descriptors.messages.get(m.input_type)
    if options.get("ignore_unknown_query_parameters") and request is not None:
        conventions["query_fields"] = ",".join(f.name for f in request.field)
    out: dict[str, Any] = {CONVENTIONS_FILTER: conventions} if conventions else {}
    body = body_message(m, rule, descriptors)
    if body:
        out[BODY_FILTER] = {"body": body}
        if options.get("stream_request_body"):
            # Never whole at the edge: the filter checks the body's start as it passes.
            out[BODY_FILTER]["stream"] = True
    return out
