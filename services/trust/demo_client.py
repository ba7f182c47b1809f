"""The partner client: the demo clients in var/demo/clients/ (written by the trust seed) as
a partner's system would use them, in plain HTTP against the public edge. One client for
the demo story (deploy/local/demo.py), the e2e tests, the benchmarks and trying the mesh by
hand.

    edge = Edge(edge_url)
    client = DemoClient.load(var_dir / "demo", "gp-ehr", edge)       # or an edge URL
    token = client.client_credentials("samhandling:results", dpop=True)
    token = client.login("samhandling:results", hpr_number="1000001",
                         attestation=client.attestation("LE"))
    token = client.login(pid="...")                                  # citizen-portal
    reply = edge.call("GET", "/v1/results/123", token)   # DPoP proof, nonce retry
    headers = token.headers("GET", f"{edge_url}/v1/results/123")     # by hand

A refused grant raises `OAuthFailure` (status and OAuth `error`). A DPoP nonce the server
asks for (RFC 9449 §8, `use_dpop_nonce`) is sent on a second try, at the token endpoint and
at the APIs.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from services.common.auth import TRUST_FRAMEWORK_TYPE
from services.common.dpop import b64url, make_proof

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class OAuthFailure(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('error')}: {body.get('error_description', '')}")
        self.status = status
        self.error = str(body.get("error", ""))
        self.body = body


@dataclass
class DpopSigner:
    private_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_jwk(self) -> dict[str, Any]:
        return dict(json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private_key.public_key())))

    def proof(
        self,
        method: str,
        url: str,
        access_token: str | None = None,
        nonce: str | None = None,
        **kw: Any,
    ) -> str:
        """A proof for `method url` (the query is not part of `htu`, RFC 9449 §4.2)."""
        htu = url.split("?", 1)[0]
        return make_proof(self.private_key, self.public_jwk, method, htu, access_token, nonce, **kw)


@dataclass
class Token:
    access_token: str
    token_type: str
    expires_in: int
    scope: str = ""
    refresh_token: str | None = None
    id_token: str | None = None
    dpop: DpopSigner | None = None

    def headers(
        self, method: str = "POST", url: str = "", nonce: str | None = None
    ) -> dict[str, str]:
        """Authorization (and a fresh DPoP proof for `method url` if the token is bound)."""
        if self.dpop is None:
            return {"Authorization": f"Bearer {self.access_token}"}
        return {
            "Authorization": f"DPoP {self.access_token}",
            "DPoP": self.dpop.proof(method, url, self.access_token, nonce),
        }

    def metadata(self, grpc_method: str = "", public_url: str = "") -> list[tuple[str, str]]:
        """gRPC metadata; for a DPoP token the proof names `<public_url>/<grpc_method>`."""
        if self.dpop is None:
            return [("authorization", f"Bearer {self.access_token}")]
        proof = self.dpop.proof("POST", public_url.rstrip("/") + grpc_method, self.access_token)
        return [("authorization", f"DPoP {self.access_token}"), ("dpop", proof)]

    @property
    def claims(self) -> dict[str, Any]:
        """The token's claims, unverified (for display and tests)."""
        return dict(jwt.decode(self.access_token, options={"verify_signature": False}))


class Edge:
    """HTTP to the public edge, as a partner calls it: the token's Authorization (and DPoP
    proof), and a second try with the nonce if the API asks for one (RFC 9449 §9)."""

    def __init__(self, url: str, http: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = http or requests.Session()

    def call(
        self, method: str, path: str, token: Token | None = None, **kwargs: Any
    ) -> requests.Response:
        url = self.url + path
        headers = dict(kwargs.pop("headers", {}))
        kwargs.setdefault("timeout", 30)
        nonce = None
        for _ in range(2):
            if token is not None:
                headers.update(token.headers(method, url, nonce))
            reply = self.http.request(method, url, headers=headers, **kwargs)
            nonce = reply.headers.get("DPoP-Nonce")
            if reply.status_code not in (400, 401) or not nonce or token is None:
                return reply
        return reply


@dataclass
class DemoClient:
    client_id: str
    private_jwk: dict[str, Any]
    edge_url: str
    scope: str = ""
    redirect_uris: list[str] = field(default_factory=list)
    orgnr: str = ""
    http: requests.Session = field(default_factory=requests.Session)

    @classmethod
    def load(cls, demo_dir: Path, name: str, edge: Edge | str) -> DemoClient:
        """var/demo/clients/<name>.json; FileNotFoundError if the trust seed did not write it."""
        data = json.loads((Path(demo_dir) / "clients" / f"{name}.json").read_text())
        http = edge.http if isinstance(edge, Edge) else requests.Session()
        return cls(
            client_id=data["client_id"],
            private_jwk=data["private_jwk"],
            edge_url=(edge.url if isinstance(edge, Edge) else edge).rstrip("/"),
            scope=data.get("scope", ""),
            redirect_uris=list(data.get("redirect_uris") or []),
            orgnr=data.get("orgnr_parent", ""),
            http=http,
        )

    # --- building blocks --------------------------------------------------------------------
    def assertion(self, audience: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience or f"{self.edge_url}/connect/token",
            "iat": now,
            "exp": now + 60,
            "jti": secrets.token_urlsafe(16),
            **claims,
        }
        key = jwt.PyJWK.from_dict(self.private_jwk).key
        return jwt.encode(body, key, algorithm="ES256", headers={"kid": self.private_jwk["kid"]})

    def attestation(
        self,
        category: str,
        legal_entity: str | None = None,
        purpose: str = "TREAT",
        point_of_care: str | None = None,
        department: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A trust-framework entry for this client's organisation (or `legal_entity`), with a
        point of care (organisation number) and a department (RESH id) if given."""
        practitioner: dict[str, Any] = {
            "authorization": {"code": category, "system": "urn:oid:2.16.578.1.12.4.1.1.9060"},
            "legal_entity": {
                "id": legal_entity or self.orgnr,
                "system": "urn:oid:2.16.578.1.12.4.1.4.101",
            },
        }
        if point_of_care:
            practitioner["point_of_care"] = {
                "id": point_of_care,
                "system": "urn:oid:2.16.578.1.12.4.1.4.101",
            }
        if department:
            practitioner["department"] = {
                "id": department,
                "system": "urn:oid:2.16.578.1.12.4.1.4.102",
            }
        return {
            "type": TRUST_FRAMEWORK_TYPE,
            "practitioner": practitioner,
            "care_relationship": {
                "purpose_of_use": {
                    "code": purpose,
                    "system": "urn:oid:2.16.840.1.113883.1.11.20448",
                }
            },
            **extra,
        }

    def _post(self, path: str, form: dict[str, str]) -> Any:
        reply = self.http.post(f"{self.edge_url}{path}", data=form, timeout=30)
        if reply.status_code not in (200, 201):  # PAR answers 201 at the edge (RFC 9126)
            raise OAuthFailure(reply.status_code, _error_body(reply))
        return reply

    def _token(self, form: dict[str, str], dpop: DpopSigner | None, **claims: Any) -> Token:
        """The token endpoint, with the nonce on a second try if the server asks for one
        (RFC 9449 §8: 400 `use_dpop_nonce` and a `DPoP-Nonce` header); each try carries a
        fresh client assertion (its `jti` is single use)."""
        url = f"{self.edge_url}/connect/token"
        nonce = None
        for _ in range(2):
            assertion = {"client_assertion": self.assertion(**claims)}
            body = {**form, "client_assertion_type": ASSERTION_TYPE, **assertion}
            headers = {"DPoP": dpop.proof("POST", url, nonce=nonce)} if dpop else {}
            reply = self.http.post(url, data=body, headers=headers, timeout=30)
            nonce = reply.headers.get("DPoP-Nonce")
            if reply.status_code == 200 or not nonce or dpop is None:
                break
        if reply.status_code != 200:
            raise OAuthFailure(reply.status_code, _error_body(reply))
        body = reply.json()
        return Token(
            access_token=body["access_token"],
            token_type=body["token_type"],
            expires_in=int(body["expires_in"]),
            scope=body.get("scope", ""),
            refresh_token=body.get("refresh_token"),
            id_token=body.get("id_token"),
            dpop=dpop if body["token_type"] == "DPoP" else None,
        )

    # --- grants -----------------------------------------------------------------------------
    def client_credentials(
        self,
        resource: str | None = None,
        scope: str | None = None,
        dpop: DpopSigner | bool | None = None,
        acting_for: str | None = None,
        point_of_care: str | None = None,
    ) -> Token:
        """`dpop`: a key to bind the token to (True: a fresh one). `acting_for` (and
        `point_of_care`): the tenant a multi-tenant client chooses, as HelseID's
        `helseid_authorization` entry in the client assertion."""
        form = {"grant_type": "client_credentials"}
        if resource:
            form["resource"] = resource
        if scope:
            form["scope"] = scope
        claims: dict[str, Any] = {}
        if acting_for:
            value = f"NO:ORGNR:{acting_for}" + (f":{point_of_care}" if point_of_care else "")
            identifier = {"system": "urn:oid:1.0.6523", "type": "ENH", "value": value}
            claims["authorization_details"] = [
                {
                    "type": "helseid_authorization",
                    "practitioner_role": {"organization": {"identifier": identifier}},
                }
            ]
        return self._token(form, _signer(dpop), **claims)

    def login(
        self,
        resource: str | None = None,
        scope: str | None = None,
        dpop: DpopSigner | bool | None = None,
        pid: str = "",
        hpr_number: str = "",
        authorization_details: list[dict[str, Any]] | None = None,
    ) -> Token:
        """PAR, the TestID login page and its form, the code exchange (PKCE S256)."""

        def testid(authorize_url: str) -> str:
            page = self.http.get(authorize_url, timeout=30)
            if page.status_code != 200 or "<form" not in page.text:
                raise OAuthFailure(page.status_code, _error_body(page))
            hidden = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page.text))
            done = self.http.post(
                f"{self.edge_url}/connect/authorize",
                data={**hidden, "pid": pid, "hpr_number": hpr_number},
                timeout=30,
                allow_redirects=False,
            )
            if "location" not in done.headers:
                raise OAuthFailure(done.status_code, _error_body(done))
            return str(done.headers["location"])

        return self.login_with(testid, resource, scope, dpop, authorization_details)

    def login_with(
        self,
        user: Callable[[str], str],
        resource: str | None = None,
        scope: str | None = None,
        dpop: DpopSigner | bool | None = None,
        authorization_details: list[dict[str, Any]] | None = None,
    ) -> Token:
        """PAR, then `user(authorize_url)` plays the browser (TestID's form, or an upstream
        identity provider) and returns where trust finally redirected it (the client's
        redirect URI with `code` or `error`), then the code exchange (PKCE S256)."""
        if not self.redirect_uris:
            raise ValueError(f"{self.client_id} has no redirect_uri")
        verifier = secrets.token_urlsafe(48)
        challenge = b64url(hashlib.sha256(verifier.encode()).digest())
        redirect_uri = self.redirect_uris[0]
        form = {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(audience=self.edge_url),
            "client_id": self.client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "scope": scope or self.scope,
            "state": secrets.token_urlsafe(8),
        }
        if resource:
            form["resource"] = resource
        if authorization_details:
            form["authorization_details"] = json.dumps(authorization_details)
        pushed = self._post("/connect/par", form).json()
        authorize_url = f"{self.edge_url}/connect/authorize?" + urlencode(
            {"client_id": self.client_id, "request_uri": pushed["request_uri"]}
        )
        location = user(authorize_url)
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        if "code" not in query:
            raise OAuthFailure(400, query)
        grant = {
            "grant_type": "authorization_code",
            "code": query["code"],
            "code_verifier": verifier,
            "redirect_uri": redirect_uri,
        }
        return self._token(grant, _signer(dpop))

    def refresh(self, token: Token, resource: str | None = None) -> Token:
        """A new token of the same login (for another API: `resource`), same DPoP key."""
        if not token.refresh_token:
            raise ValueError("no refresh token")
        form = {"grant_type": "refresh_token", "refresh_token": token.refresh_token}
        if resource:
            form["resource"] = resource
        return self._token(form, token.dpop)

    def exchange(self, subject: Token | str, resource: str, scope: str | None = None) -> Token:
        """RFC 8693: a token for `resource` on behalf of the subject token's caller, bound
        to a fresh DPoP key of this client (the trust service requires the proof)."""
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject.access_token if isinstance(subject, Token) else subject,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "resource": resource,
        }
        if scope:
            form["scope"] = scope
        return self._token(form, DpopSigner())

    def act_for(self, subject: Token, representation_id: str, resource: str) -> Token:
        """RFC 8693 for acting for someone else (README, "Acting for someone else"): the
        citizen's own DPoP-bound token as subject, a `representation_id` from
        `GET /v1/privacy/representations`, and a proof of the SAME key (the new token stays
        bound to the key the citizen's session holds)."""
        if subject.dpop is None:
            raise ValueError("acting for someone else needs the citizen's DPoP-bound token")
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject.access_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "resource": resource,
            "representation_id": representation_id,
        }
        return self._token(form, subject.dpop)


def _signer(dpop: DpopSigner | bool | None) -> DpopSigner | None:
    if isinstance(dpop, DpopSigner):
        return dpop
    return DpopSigner() if dpop else None


def _error_body(reply: requests.Response) -> dict[str, Any]:
    """The OAuth error body (RFC 6749 §5.2), or the start of whatever else came back."""
    try:
        body = reply.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"error": "http_error", "error_description": reply.text[:300]}
