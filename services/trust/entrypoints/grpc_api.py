"""The thin gRPC servicer: HttpBody forms in, JSON/HTML out, OAuth errors as RFC 6749 bodies.

How an OAuth error reaches a REST client with the right HTTP status: the handler sends the
RFC 6749 JSON as the response message *and* sets a non-OK gRPC status (INVALID_ARGUMENT
for 400, UNAUTHENTICATED for 401). Envoy's transcoder maps the status to the HTTP status
and, since there is a body, keeps our body instead of writing its own. Response headers
(`Cache-Control`, `DPoP-Nonce`, `Location`) travel as initial metadata, which Envoy passes
on as HTTP headers. A gRPC caller sees the status with the same JSON as its message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import grpc
from google.api import httpbody_pb2
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from samhandling.trust.v1 import trust_service_pb2 as pb
from samhandling.trust.v1 import trust_service_pb2_grpc as pb_grpc

from services.common.auth import current_principal
from services.common.errors import invalid_field
from services.common.internal_methods import internal_methods_of
from services.common.logging import log_fields
from services.common.tokens import Scopes
from services.trust.domain.model import Client, OAuthError, invalid_request
from services.trust.entrypoints.pages import login_page, message_page, redirect_page
from services.trust.service_layer.clients import UPDATABLE, ClientRegistry
from services.trust.service_layer.discovery import discovery
from services.trust.service_layer.federation import LoginProblem
from services.trust.service_layer.oauth import TrustService
from services.trust.service_layer.redirects import Redirect

log = logging.getLogger("samhandling.trust")

FULL_NAME = "samhandling.trust.v1.TrustService"
PUBLIC_METHODS = frozenset(
    f"/{FULL_NAME}/{m}"
    for m in (
        "GetJwks",
        "GetOpenidConfiguration",
        "Token",
        "PushAuthorizationRequest",
        "Authorize",
        "CompleteLogin",
        "CompleteUpstreamLogin",
        "RevokeToken",
        "IntrospectToken",
    )
)
# Internal, never routed at the edge (no HTTP rule) and token-less: the caller's workload
# identity is its credential. ListRevocations: every service that verifies access tokens
# (declared with its callers in services/common/internal_methods.py).
INTERNAL_METHODS = internal_methods_of(FULL_NAME)
FORM = "application/x-www-form-urlencoded"
_REVOCATION_KINDS = {
    "jti": pb.REVOCATION_KIND_TOKEN,
    "sid": pb.REVOCATION_KIND_LOGIN,
    "client_id": pb.REVOCATION_KIND_CLIENT,
}


def parse_form(body: httpbody_pb2.HttpBody) -> dict[str, str]:
    """RFC 6749 §3.2: form-encoded, each parameter at most once."""
    content_type = body.content_type.split(";", 1)[0].strip().lower()
    if content_type not in (FORM, ""):
        raise invalid_request(f"the body must be {FORM}")
    try:
        pairs = parse_qsl(
            body.data.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=64,
            strict_parsing=False,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise invalid_request("malformed form body") from exc
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise invalid_request(f"parameter {key} given more than once")
        params[key] = value
    return params


def _json_body(body: Any) -> httpbody_pb2.HttpBody:
    data = json.dumps(body, separators=(",", ":")).encode()
    return httpbody_pb2.HttpBody(content_type="application/json", data=data)


def _html_body(page: str) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="text/html; charset=utf-8", data=page.encode())


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def client_to_proto(client: Client) -> pb.Client:
    jwks = struct_pb2.Struct()
    jwks.update(client.jwks)
    return pb.Client(
        name=f"clients/{client.client_id}",
        client_id=client.client_id,
        display_name=client.display_name,
        orgnr_parent=client.orgnr_parent,
        orgnr_child=client.orgnr_child,
        tenants=client.tenants,
        jwks=jwks,
        grant_types=client.grant_types,
        scopes=client.scopes,
        audiences=client.audiences,
        redirect_uris=client.redirect_uris,
        dpop_required=client.dpop_required,
        create_time=_ts(client.create_time),
        update_time=_ts(client.update_time),
    )


def client_from_proto(message: pb.Client) -> Client:
    return Client(
        client_id=message.client_id,
        display_name=message.display_name,
        orgnr_parent=message.orgnr_parent,
        orgnr_child=message.orgnr_child,
        tenants=list(message.tenants),
        jwks=json_format.MessageToDict(message.jwks),
        grant_types=list(message.grant_types),
        scopes=list(message.scopes),
        audiences=list(message.audiences),
        redirect_uris=list(message.redirect_uris),
        dpop_required=message.dpop_required,
    )


def _client_id(name: str) -> str:
    return name.removeprefix("clients/")


class TrustServicer(pb_grpc.TrustServiceServicer):
    def __init__(self, service: TrustService, registry: ClientRegistry) -> None:
        # The use cases themselves; `service` only wires them.
        self.settings = service.settings
        self.keys = service.keys
        self.repo = service.repo
        self.tokens = service.tokens
        self.login = service.login
        self.federation = service.federation
        self.revocation = service.revocation
        self.registry = registry

    # --- OAuth plumbing ---------------------------------------------------------------------
    def _answer(
        self,
        context: grpc.ServicerContext,
        produce: Callable[[], httpbody_pb2.HttpBody],
        endpoint: str,
    ) -> httpbody_pb2.HttpBody:
        try:
            reply = produce()
        except OAuthError as exc:
            headers = {"cache-control": "no-store", "pragma": "no-cache", **exc.headers}
            context.send_initial_metadata(list(headers.items()))
            context.set_code(
                grpc.StatusCode.UNAUTHENTICATED
                if exc.status == 401
                else grpc.StatusCode.UNAVAILABLE
                if exc.status == 503
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            context.set_details(json.dumps(exc.body()))
            log.info("oauth error", extra=log_fields(endpoint=endpoint, error=exc.error))
            return _json_body(exc.body())
        return reply

    @staticmethod
    def _metadata(context: grpc.ServicerContext) -> Mapping[str, str]:
        return {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}

    def _json(
        self, context: grpc.ServicerContext, body: Any, headers: Mapping[str, str] | None = None
    ) -> httpbody_pb2.HttpBody:
        if headers:
            context.send_initial_metadata(list(headers.items()))
        return _json_body(body)

    # --- public endpoints -------------------------------------------------------------------
    def GetJwks(self, request: pb.GetJwksRequest, context: grpc.ServicerContext) -> Any:
        return _json_body(self.keys.jwks())

    def GetOpenidConfiguration(
        self, request: pb.GetOpenidConfigurationRequest, context: grpc.ServicerContext
    ) -> Any:
        return _json_body(discovery(self.settings))

    def Token(self, request: pb.TokenRequest, context: grpc.ServicerContext) -> Any:
        def produce() -> httpbody_pb2.HttpBody:
            params = parse_form(request.body)
            proof = self._metadata(context).get("dpop")
            body = self.tokens.token(params, proof)
            return self._json(context, body, self.tokens.response_headers())

        return self._answer(context, produce, "token")

    def PushAuthorizationRequest(
        self, request: pb.PushAuthorizationRequestRequest, context: grpc.ServicerContext
    ) -> Any:
        def produce() -> httpbody_pb2.HttpBody:
            body = self.login.push_authorization_request(parse_form(request.body))
            return self._json(context, body, {"cache-control": "no-store"})

        return self._answer(context, produce, "par")

    def Authorize(self, request: pb.AuthorizeRequest, context: grpc.ServicerContext) -> Any:
        def produce() -> httpbody_pb2.HttpBody:
            page = self.login.authorize(request.client_id, request.request_uri)
            if isinstance(page, Redirect):
                return self._redirect(context, page)
            context.send_initial_metadata([("cache-control", "no-store")])
            return _html_body(login_page(page))

        return self._answer(context, produce, "authorize")

    def CompleteLogin(self, request: pb.CompleteLoginRequest, context: grpc.ServicerContext) -> Any:
        def produce() -> httpbody_pb2.HttpBody:
            return self._redirect(context, self.login.complete_login(parse_form(request.body)))

        return self._answer(context, produce, "login")

    def CompleteUpstreamLogin(
        self, request: pb.CompleteUpstreamLoginRequest, context: grpc.ServicerContext
    ) -> Any:
        params = {
            name: getattr(request, name)
            for name in ("code", "state", "iss", "error", "error_description")
            if getattr(request, name)
        }
        try:
            redirect = self.federation.callback(params)
        except LoginProblem as problem:
            # Not tied to any login: nobody to redirect to. A page for the user, HTTP 400.
            body = {"error": problem.error, "error_description": problem.description}
            context.send_initial_metadata([("cache-control", "no-store")])
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details(json.dumps(body))
            log.info("upstream login refused", extra=log_fields(error=problem.error))
            return _html_body(message_page("Login failed", problem.description))
        if redirect.notice:
            log.info("upstream login failed", extra=log_fields(reason=redirect.notice[:200]))
        return self._redirect(context, redirect)

    @staticmethod
    def _redirect(context: grpc.ServicerContext, redirect: Redirect) -> httpbody_pb2.HttpBody:
        context.send_initial_metadata(
            [("location", redirect.location), ("cache-control", "no-store")]
        )
        return _html_body(redirect_page(redirect.location, redirect.notice))

    def RevokeToken(self, request: pb.RevokeTokenRequest, context: grpc.ServicerContext) -> Any:
        def produce() -> httpbody_pb2.HttpBody:
            self.revocation.revoke(parse_form(request.body))
            return self._json(context, {}, {"cache-control": "no-store"})

        return self._answer(context, produce, "revoke")

    def IntrospectToken(
        self, request: pb.IntrospectTokenRequest, context: grpc.ServicerContext
    ) -> Any:
        def produce() -> httpbody_pb2.HttpBody:
            body = self.revocation.introspect(parse_form(request.body))
            return self._json(context, body, {"cache-control": "no-store"})

        return self._answer(context, produce, "introspect")

    # --- admin: the client registry ---------------------------------------------------------
    @staticmethod
    def _admin() -> None:
        current_principal().require_scope(Scopes.TRUST_ADMIN)

    def CreateClient(self, request: pb.CreateClientRequest, context: grpc.ServicerContext) -> Any:
        self._admin()
        return client_to_proto(self.registry.create(client_from_proto(request.client)))

    def GetClient(self, request: pb.GetClientRequest, context: grpc.ServicerContext) -> Any:
        self._admin()
        return client_to_proto(self.registry.get(_client_id(request.name)))

    def ListClients(self, request: pb.ListClientsRequest, context: grpc.ServicerContext) -> Any:
        self._admin()
        clients, token = self.registry.list(request.page_size, request.page_token)
        return pb.ListClientsResponse(
            clients=[client_to_proto(c) for c in clients], next_page_token=token
        )

    def UpdateClient(self, request: pb.UpdateClientRequest, context: grpc.ServicerContext) -> Any:
        self._admin()
        changes = client_from_proto(request.client)
        client_id = _client_id(request.client.name) or request.client.client_id
        if not client_id:
            raise invalid_field("client.name", "required")
        changes.client_id = client_id
        fields = list(request.update_mask.paths) or list(UPDATABLE)
        return client_to_proto(self.registry.update(changes, fields))

    def DeleteClient(self, request: pb.DeleteClientRequest, context: grpc.ServicerContext) -> Any:
        self._admin()
        self.registry.delete(_client_id(request.name))
        return pb.DeleteClientResponse()

    def RotateSigningKeys(
        self, request: pb.RotateSigningKeysRequest, context: grpc.ServicerContext
    ) -> Any:
        self._admin()
        kids = self.keys.rotate()
        return pb.RotateSigningKeysResponse(
            current_kid=kids.get("current", ""),
            next_kid=kids.get("next", ""),
            previous_kid=kids.get("previous", ""),
        )

    # --- internal ---------------------------------------------------------------------------
    def ListRevocations(
        self, request: pb.ListRevocationsRequest, context: grpc.ServicerContext
    ) -> Any:
        return pb.ListRevocationsResponse(
            revocations=[
                pb.Revocation(
                    kind=_REVOCATION_KINDS[row["kind"]],
                    value=row["value"],
                    revoke_time=_ts(row["revoked_at"]),
                    expire_time=_ts(row["expires_at"]),
                )
                for row in self.repo.revocations()
                if row["kind"] in _REVOCATION_KINDS
            ]
        )
