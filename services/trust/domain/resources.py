"""Resource indicators (RFC 8707): which API a token is for, and the scopes it keeps.

One API per token: a scope `samhandling:results/read` belongs to the API
`samhandling:results`; the identity scopes (`openid`, ...) belong to none.
"""

from __future__ import annotations

from services.trust.domain.model import OIDC_SCOPES, Client, OAuthError


def scope_audience(scope: str) -> str | None:
    """`samhandling:results/read` belongs to the API `samhandling:results`."""
    if scope in OIDC_SCOPES or "/" not in scope:
        return None
    return scope.split("/", 1)[0]


def token_audience(
    client: Client, scopes: list[str], resource: str | None, default: str | None = None
) -> str:
    """RFC 8707: `resource`, else the default (a login's), else the one API all the
    scopes belong to, else the client's only audience (`invalid_target` otherwise)."""
    if resource:
        return client.audience(resource)
    if default:
        return default
    apis = {scope_audience(s) for s in scopes} - {None}
    if len(apis) == 1 and next(iter(apis)) in client.audiences:
        return str(next(iter(apis)))
    return client.audience(None)


def login_audience(client: Client, scopes: list[str], resource: str | None) -> str:
    """At PAR the audience may stay open (several APIs) until the token request."""
    try:
        return token_audience(client, scopes, resource)
    except OAuthError:
        if resource:
            raise
        return ""


def narrow(scopes: list[str], audience: str, requested: bool) -> list[str]:
    """The scopes that belong to the token's audience (one API per token)."""
    narrowed = [s for s in scopes if scope_audience(s) in (audience, None)]
    if requested and scopes and not narrowed:
        raise OAuthError("invalid_scope", "none of the requested scopes is for the resource")
    return narrowed
