"""The trust service's tables (SQLAlchemy Core). Times are epoch seconds (float)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

clients = sa.Table(
    "trust_clients",
    metadata,
    sa.Column("client_id", sa.String(64), primary_key=True),
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("orgnr_parent", sa.String(9), nullable=False, server_default=""),
    sa.Column("orgnr_child", sa.String(9), nullable=False, server_default=""),
    sa.Column("jwks", sa.Text, nullable=False),
    sa.Column("grant_types", sa.Text, nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("audiences", sa.Text, nullable=False),
    sa.Column("redirect_uris", sa.Text, nullable=False),
    # JSON list of organisation numbers (multi-tenant clients); "[]" = own organisation tree
    sa.Column("tenants", sa.Text, nullable=False, server_default="[]"),
    sa.Column("dpop_required", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("create_time", sa.Float, nullable=False),
    sa.Column("update_time", sa.Float, nullable=False),
)

# One-time identifiers: client assertion jti, DPoP proof jti at the token endpoint.
used_jtis = sa.Table(
    "trust_used_jtis",
    metadata,
    sa.Column("jti_key", sa.String(300), primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)

signing_keys = sa.Table(
    "trust_signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),  # next/current/previous/retired
    sa.Column("private_key", sa.Text, nullable=False),  # AES-GCM encrypted PKCS#8, base64
    sa.Column("public_jwk", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("activated_at", sa.Float, nullable=True),
    sa.Column("retired_at", sa.Float, nullable=True),
)

par_requests = sa.Table(
    "trust_par_requests",
    metadata,
    sa.Column("request_uri", sa.String(120), primary_key=True),
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used", sa.Boolean, nullable=False, server_default=sa.false()),
)

auth_codes = sa.Table(
    "trust_auth_codes",
    metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used", sa.Boolean, nullable=False, server_default=sa.false()),
)

refresh_tokens = sa.Table(
    "trust_refresh_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("family_id", sa.String(64), nullable=False, index=True),
    sa.Column("client_id", sa.String(64), nullable=False, index=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # active/used/revoked
)

# Revocations in force (access tokens by jti, logins by sid, clients by client_id): tokens
# with that claim issued at or before `revoked_at` are refused until `expires_at`, when the
# last of them has expired. Resource servers poll the list (ListRevocations).
revocations = sa.Table(
    "trust_revocations",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),  # the claim: jti, sid, client_id
    sa.Column("value", sa.String(128), primary_key=True),
    sa.Column("revoked_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)
