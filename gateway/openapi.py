"""OpenAPI 3.1 for the REST surface, generated from the descriptor set.

Paths and verbs come from the `google.api.http` rules of the public methods (the same set
the edge routes), schemas from the messages, following the proto3 JSON mapping as Envoy's
transcoder applies it (snake_case field names, int64 as strings, enums by name, well-known
types as their JSON forms). Descriptions come from the proto comments. The edge serves
the document at /openapi.json; `python -m gateway.openapi` prints it.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

from gateway.surface import DESCRIPTORS, ROUTES, EdgeSpec, load_methods

if TYPE_CHECKING:
    from gateway.surface import HttpRule, Method

FDP = descriptor_pb2.FieldDescriptorProto

HTTP_BODY = "google.api.HttpBody"
ERROR_SCHEMA = "Error"
OAUTH_ERROR_SCHEMA = "OAuthError"
_ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}

_SCALARS: dict[int, dict[str, Any]] = {
    FDP.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FDP.TYPE_FLOAT: {"type": "number", "format": "float"},
    FDP.TYPE_INT64: {"type": "string", "format": "int64"},
    FDP.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FDP.TYPE_SINT64: {"type": "string", "format": "int64"},
    FDP.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FDP.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FDP.TYPE_INT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    FDP.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_FIXED32: {"type": "integer", "format": "int32", "minimum": 0},
    FDP.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FDP.TYPE_BOOL: {"type": "boolean"},
    FDP.TYPE_STRING: {"type": "string"},
    FDP.TYPE_BYTES: {"type": "string", "format": "byte"},
}

_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.Int32Value": {"type": "integer"},
    "google.protobuf.UInt32Value": {"type": "integer"},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64"},
}


class Descriptors:
    """Messages, enums and comments of a descriptor set, by full name."""

    def __init__(self, descriptor_set: Path) -> None:
        fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[str, str] = {}
        for file in fds.file:
            self._index_file(file)

    def _index_file(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        paths: dict[tuple[int, ...], str] = {}
        for loc in file.source_code_info.location:
            text = (loc.leading_comments or loc.trailing_comments).strip()
            if text:
                paths[tuple(loc.path)] = " ".join(line.strip() for line in text.splitlines())
        prefix = file.package

        def walk_message(
            msg: descriptor_pb2.DescriptorProto, name: str, path: tuple[int, ...]
        ) -> None:
            self.messages[name] = msg
            if path in paths:
                self.comments[name] = paths[path]
            for i, f in enumerate(msg.field):
                if (*path, 2, i) in paths:
                    self.comments[f"{name}.{f.name}"] = paths[(*path, 2, i)]
            for i, nested in enumerate(msg.nested_type):
                walk_message(nested, f"{name}.{nested.name}", (*path, 3, i))
            for i, enum in enumerate(msg.enum_type):
                walk_enum(enum, f"{name}.{enum.name}", (*path, 4, i))

        def walk_enum(
            enum: descriptor_pb2.EnumDescriptorProto, name: str, path: tuple[int, ...]
        ) -> None:
            self.enums[name] = enum
            if path in paths:
                self.comments[name] = paths[path]

        for i, msg in enumerate(file.message_type):
            walk_message(msg, f"{prefix}.{msg.name}", (4, i))
        for i, enum in enumerate(file.enum_type):
            walk_enum(enum, f"{prefix}.{enum.name}", (5, i))
        for si, service in enumerate(file.service):
            if (6, si) in paths:
                self.comments[f"{prefix}.{service.name}"] = paths[(6, si)]
            for mi, method in enumerate(service.method):
                path = (6, si, 2, mi)
                if path in paths:
                    self.comments[f"{prefix}.{service.name}/{method.name}"] = paths[path]


class SchemaBuilder:
    def __init__(self, descriptors: Descriptors) -> None:
        self.d = descriptors
        self.schemas: dict[str, Any] = {}

    def ref(self, type_name: str) -> dict[str, Any]:
        if type_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[type_name])
        if type_name not in self.schemas:
            self.schemas[type_name] = {}  # placeholder against recursion
            if type_name in self.d.enums:
                self.schemas[type_name] = self._enum(type_name)
            else:
                self.schemas[type_name] = self._message(type_name)
        return {"$ref": f"#/components/schemas/{type_name}"}

    def _enum(self, name: str) -> dict[str, Any]:
        enum = self.d.enums[name]
        schema: dict[str, Any] = {"type": "string", "enum": [v.name for v in enum.value]}
        if name in self.d.comments:
            schema["description"] = self.d.comments[name]
        return schema

    def _message(self, name: str) -> dict[str, Any]:
        msg = self.d.messages[name]
        properties = {}
        required = []
        for f in msg.field:
            prop = self.field_schema(f)
            extra: dict[str, Any] = {}
            comment = self.d.comments.get(f"{name}.{f.name}")
            if comment:
                extra["description"] = comment
            behaviors = set(f.options.Extensions[field_behavior_pb2.field_behavior])
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                extra["readOnly"] = True
            if field_behavior_pb2.REQUIRED in behaviors:
                required.append(f.name)
            if extra:
                prop = {"allOf": [prop], **extra} if "$ref" in prop else {**prop, **extra}
            properties[f.name] = prop
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if name in self.d.comments:
            schema["description"] = self.d.comments[name]
        return schema

    def field_schema(self, f: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        type_name = f.type_name.lstrip(".")
        if f.type == FDP.TYPE_MESSAGE:
            entry = self.d.messages.get(type_name)
            if entry is not None and entry.options.map_entry:
                value = next(x for x in entry.field if x.name == "value")
                return {"type": "object", "additionalProperties": self.field_schema(value)}
            single = self.ref(type_name)
        elif f.type == FDP.TYPE_ENUM:
            single = self.ref(type_name)
        else:
            single = dict(_SCALARS[f.type])
        if f.label == FDP.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single

    def field_by_path(self, message: str, path: str) -> descriptor_pb2.FieldDescriptorProto | None:
        current: descriptor_pb2.FieldDescriptorProto | None = None
        msg_name = message
        for part in path.split("."):
            msg = self.d.messages.get(msg_name)
            if msg is None:
                return None
            current = next((f for f in msg.field if f.name == part or f.json_name == part), None)
            if current is None:
                return None
            msg_name = current.type_name.lstrip(".")
        return current


_VAR = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")


def openapi_path(template: str) -> tuple[str, list[str]]:
    """'/v1/results/{result_id}' -> ('/v1/results/{result_id}', ['result_id']).

    A variable with a pattern keeps the pattern's literal segments in the path, its
    wildcards become the parameter: '/v1/{name=clients/*}' -> '/v1/clients/{name}' (the
    request field `name` is then 'clients/<value>').

    A dotted field path becomes its last name ('{organization.org_number}' ->
    '{org_number}'): generators drop operations whose parameter names are not identifiers.
    `path_fields` gives the request fields behind the names.
    """
    names: list[str] = []

    def repl(match: re.Match[str]) -> str:
        field, pattern = match.group(1).rsplit(".", 1)[-1], match.group(2)
        if not pattern:
            names.append(field)
            return "{" + field + "}"
        out = []
        wildcards = [seg for seg in pattern.split("/") if seg in ("*", "**")]
        for seg in pattern.split("/"):
            if seg in ("*", "**"):
                name = field if len(wildcards) == 1 else f"{field}_{len(names) + 1}"
                names.append(name)
                out.append("{" + name + "}")
            else:
                out.append(seg)
        return "/".join(out)

    return _VAR.sub(repl, template), names


def path_fields(template: str) -> list[str]:
    """The request fields a template's variables bind, in order (one per variable)."""
    return [match.group(1) for match in _VAR.finditer(template)]


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A gRPC status as JSON (google.rpc.Status): canonical code, message, "
        "and details such as google.rpc.ErrorInfo and google.rpc.BadRequest.",
        "properties": {
            "code": {"type": "integer", "description": "gRPC canonical status code"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": _WELL_KNOWN["google.protobuf.Any"]},
        },
        "required": ["code", "message"],
    }


def _oauth_error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "An OAuth 2.0 error response (RFC 6749 §5.2, RFC 9126 §2.3, RFC 9449).",
        "properties": {
            "error": {"type": "string", "description": "e.g. invalid_request, invalid_client"},
            "error_description": {"type": "string"},
            "error_uri": {"type": "string", "format": "uri"},
            "state": {"type": "string"},
        },
        "required": ["error"],
    }


def _operation(
    m: Method,
    rule: HttpRule,
    anonymous: bool,
    builder: SchemaBuilder,
    options: dict[str, Any] | None = None,
) -> tuple[str, str, dict[str, Any]]:
    """`options`: the method's routes.yaml options (`success_status`, `redirect_status`,
    `request_media_type`, `response_media_type`)."""
    options = options or {}
    path, path_params = openapi_path(rule.template)
    fields = path_fields(rule.template)
    service = m.service.rsplit(".", 1)[-1]
    op: dict[str, Any] = {
        "operationId": f"{service}.{m.name}"
        + (f".{rule.verb.lower()}" if len(m.rules) > 1 else ""),
        "tags": [service],
        "x-grpc-method": m.path,
    }
    comment = builder.d.comments.get(m.key)
    if comment:
        op["summary"] = comment.split(". ")[0][:120]
        op["description"] = comment
    params: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
        for p in path_params
    ]
    if len(fields) == len(params):
        for path_param, field_path in zip(params, fields, strict=True):
            if field_path != path_param["name"]:
                path_param["x-proto-field"] = field_path
                path_param["description"] = f"the request's `{field_path}`"
    request_media = options.get("request_media_type")
    request = builder.d.messages.get(m.input_type)
    if rule.body == "*" or (rule.body and m.input_type == HTTP_BODY):
        op["requestBody"] = _body_content(m.input_type, builder, request_media)
    elif rule.body:
        field = builder.field_by_path(m.input_type, rule.body)
        if field is not None:
            content = (
                _raw_content(request_media)
                if field.type_name.lstrip(".") == HTTP_BODY
                else {"application/json": {"schema": builder.field_schema(field)}}
            )
            op["requestBody"] = {"required": True, "content": content}
    if request is not None and rule.body != "*" and m.input_type != HTTP_BODY:
        bound = {f.split(".")[0] for f in fields} | ({rule.body} if rule.body else set())
        for f in request.field:
            if f.name in bound or (f.type == FDP.TYPE_MESSAGE and not _is_scalar_wrapper(f)):
                continue
            schema = builder.field_schema(f)
            param: dict[str, Any] = {"name": f.name, "in": "query", "schema": schema}
            comment = builder.d.comments.get(f"{m.input_type}.{f.name}")
            if comment:
                param["description"] = comment
            params.append(param)
    if rule.verb.lower() == "get" and options.get("query_parameters"):  # a route's raw query (FHIR)
        params += [
            {"name": name, "in": "query", "schema": {"type": "array", "items": {"type": "string"}}}
            for name in options["query_parameters"]
        ]
    if params:
        op["parameters"] = params
    output = m.output_type
    if rule.response_body:
        field = builder.field_by_path(m.output_type, rule.response_body)
        ok: dict[str, Any] = {
            "description": "OK",
            "content": {
                "application/json": {"schema": builder.field_schema(field) if field else {}}
            },
        }
    elif output == HTTP_BODY:
        ok = {"description": "OK", "content": _raw_content(options.get("response_media_type"))}
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": builder.ref(output)}}}
    error: dict[str, Any] = {
        "description": "Error (gRPC status as JSON)",
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}
        },
    }
    if m.server_streaming and output != HTTP_BODY and "application/json" in ok["content"]:
        # The transcoder answers a stream of messages as one JSON array.
        schema = ok["content"]["application/json"]["schema"]
        ok["content"]["application/json"]["schema"] = {"type": "array", "items": schema}
    if m.client_streaming and "requestBody" in op and m.input_type != HTTP_BODY:
        content = op["requestBody"]["content"].get("application/json")
        if content:
            content["schema"] = {"type": "array", "items": content["schema"]}
    # The conventions filter's status rewrites (gateway/conventions.py): PAR's 201, the
    # login's redirect.
    responses: dict[str, Any] = {str(options.get("success_status") or 200): ok}
    if options.get("redirect_status"):
        responses[str(options["redirect_status"])] = {
            "description": "Redirect to the client's redirect URI",
            "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
        }
    if options.get("oauth_errors"):
        # RFC 6749 §5.2 bodies from the service; the edge's own refusals keep the gRPC shape.
        for status, text in (("400", "Bad request"), ("401", "Client authentication failed")):
            schema = {"anyOf": [{"$ref": f"#/components/schemas/{OAUTH_ERROR_SCHEMA}"}, _ERROR_REF]}
            responses[status] = {
                "description": f"{text} (an OAuth error, RFC 6749 §5.2)",
                "content": {"application/json": {"schema": schema}},
            }
    media = options.get("error_media_type")
    if media:
        # The service's errors in another media type (routes.yaml `error_media_type`): a
        # page for a person (the login callback), a FHIR OperationOutcome; the edge's own
        # refusals stay gRPC-status JSON.
        error = {
            "description": f"Error: {media} from the service, or the edge's JSON error",
            "content": {
                media: {"schema": {"type": "string"} if media.startswith("text/") else {}},
                **error["content"],
            },
        }
    for chosen in options.get("service_status") or ():
        # Statuses the service picks with x-samhandling-http-status (gateway/conventions.py).
        responses.setdefault(
            str(chosen),
            {
                "description": "Status chosen by the service (e.g. 202: still running)",
                "content": ok.get("content", {}),
            },
        )
    op["responses"] = {**responses, "default": error}
    if anonymous:
        op["security"] = []
    return path, rule.verb.lower(), op


def _is_scalar_wrapper(f: descriptor_pb2.FieldDescriptorProto) -> bool:
    name = f.type_name.lstrip(".")
    return (
        name in _WELL_KNOWN
        and name.startswith("google.protobuf.")
        and name.endswith(("Value", "Timestamp", "Duration", "FieldMask"))
        and name not in ("google.protobuf.Value", "google.protobuf.ListValue")
    )


FORM = "application/x-www-form-urlencoded"


def _raw_content(media_type: str | list[str] | None = None) -> dict[str, Any]:
    """A google.api.HttpBody's content, by the media type(s) routes.yaml declares for it."""
    if isinstance(media_type, list):
        return {k: v for one in media_type for k, v in _raw_content(one).items()}
    if media_type == FORM:
        schema: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
    elif media_type and media_type.endswith(("/json", "+json")):
        schema = {"type": "object"}
    elif media_type and media_type.startswith("text/"):
        schema = {"type": "string"}
    else:
        schema = {"type": "string", "format": "binary"}
    return {media_type or "application/octet-stream": {"schema": schema}}


def _body_content(
    type_name: str, builder: SchemaBuilder, media_type: str | list[str] | None = None
) -> dict[str, Any]:
    if type_name == HTTP_BODY:
        return {"required": True, "content": _raw_content(media_type)}
    return {"required": True, "content": {"application/json": {"schema": builder.ref(type_name)}}}


def build(
    methods: Iterable[Method],
    spec: EdgeSpec,
    descriptor_set: Path,
    server_url: str | None = None,
) -> dict[str, Any]:
    methods = list(methods)
    builder = SchemaBuilder(Descriptors(descriptor_set))
    paths: dict[str, dict[str, Any]] = {}
    for m in sorted(methods, key=lambda x: x.key):
        for rule in m.rules:
            path, verb, op = _operation(
                m, rule, spec.is_anonymous(m, rule), builder, spec.options(m)
            )
            paths.setdefault(path, {})[verb] = op
    builder.schemas[ERROR_SCHEMA] = _error_schema()
    builder.schemas[OAUTH_ERROR_SCHEMA] = _oauth_error_schema()
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Samhandling",
            "version": "v1",
            "description": "The public REST surface of the Samhandling mesh, served by its Envoy "
            "edge and transcoded to gRPC. Patient identifiers never go in paths or query "
            "strings: patient-scoped reads are POST ...:search with patient_id in the body. "
            "Access tokens come from the trust service (/connect/token); DPoP-bound tokens use "
            "the DPoP scheme with a DPoP proof header.",
        },
        "servers": [{"url": server_url or "/"}],
        "tags": [
            {"name": tag, **({"description": text} if text else {})}
            for tag, text in sorted(_service_tags(methods, builder).items())
        ],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(builder.schemas.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "dpop": {
                    "type": "http",
                    "scheme": "DPoP",
                    # bearerFormat is for the bearer scheme only (OpenAPI 3.1 schema).
                    "description": "RFC 9449: Authorization: DPoP <token> (a JWT) plus a DPoP "
                    "proof header",
                },
            },
        },
        "security": [{"bearer": []}, {"dpop": []}],
    }
    return document


def _service_tags(methods: Iterable[Method], builder: SchemaBuilder) -> dict[str, str]:
    return {
        m.service.rsplit(".", 1)[-1]: builder.d.comments.get(m.service, "")
        for m in methods
        if m.rules
    }


def dangling_refs(document: dict[str, Any]) -> list[str]:
    """Every `$ref` in the document that names no schema under components (a check)."""
    schemas = document.get("components", {}).get("schemas", {})
    missing: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.removeprefix("#/components/schemas/") not in schemas:
                missing.append(ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--server", default=None, help="server URL, e.g. http://127.0.0.1:8080")
    args = parser.parse_args()
    spec = EdgeSpec.load(ROUTES)
    methods = [
        m for m in load_methods(DESCRIPTORS) if m.package in spec.packages and spec.is_public(m)
    ]
    text = json.dumps(build(methods, spec, DESCRIPTORS, args.server), indent=2)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
