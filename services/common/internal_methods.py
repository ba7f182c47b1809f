"""Internal methods and who may call them: declared once, read by everything.

An internal method is never routed at the public edge and only answers a caller whose mesh
certificate (mutual TLS, see workload_identity.py) names one of its allowed workloads; any
other caller gets PERMISSION_DENIED (CALLER_NOT_ALLOWED), a caller with no client
certificate UNAUTHENTICATED (NO_CLIENT_CERTIFICATE), whatever token either carries. The
forwarded user context (the end user's token) is only looked at once the caller passed.

Readers: the call pipeline (services/common/interceptors.py), each servicer's
`INTERNAL_METHODS`, the edge generator (gateway/render.py: no public route), the Kubernetes
NetworkPolicies (deploy/k8s/generate.py) and the trust-model tables in the READMEs
(`python -m services.common.internal_methods` prints it).
"""

from __future__ import annotations

from collections.abc import Iterable

from services.common.workload_identity import EDGE

PRIVACY = "samhandling.privacy.v1.PrivacyService"
MASTERDATA = "samhandling.masterdata.v1.MasterDataService"
TRUST = "samhandling.trust.v1.TrustService"
REPRESENTATION = "samhandling.privacy.v1.RepresentationService"
POPULATION = "samhandling.masterdata.v1.PopulationService"
NOTIFICATIONS = "samhandling.notifications.v1.NotificationsService"

_DATA_SERVICES = frozenset({"results", "documents"})
# Services that check a practitioner's approval (privacy for decisions, trust at login).
_APPROVAL_CHECKERS = frozenset({"privacy", "trust"})

# "/package.Service/Method" -> the workloads allowed to call it.
INTERNAL_METHODS: dict[str, frozenset[str]] = {
    # The access decision point and the access log: only the data services, which forward
    # the end user's token as the context of the decision.
    f"/{PRIVACY}/DecideAccess": _DATA_SERVICES,
    f"/{PRIVACY}/RecordAccess": _DATA_SERVICES,
    f"/{PRIVACY}/BatchDecideAccess": _DATA_SERVICES,
    f"/{PRIVACY}/BatchRecordAccess": _DATA_SERVICES,
    # A registry's bulk export (issue #20): the cohort screened against reservations
    # against research use, each exported patient logged; results runs the exports.
    f"/{PRIVACY}/ScreenResearchExport": frozenset({"results"}),
    # Master-data lookups that exist for other services, not for partners.
    f"/{MASTERDATA}/CheckPractitionerApproval": _APPROVAL_CHECKERS,
    # Is the patient on the GP's list (a care relationship): privacy's decisions only.
    f"/{MASTERDATA}/CheckGpList": frozenset({"privacy", "notifications"}),
    # Who is this person in the HPR: trust, after an upstream (federated) login.
    f"/{MASTERDATA}/FindPractitionerByIdentity": frozenset({"trust"}),
    f"/{MASTERDATA}/ValidateCodes": _DATA_SERVICES,
    # The change feed: named subscribers (approval caches in privacy and trust,
    # services/masterdata/client.py `start_watch`).
    f"/{MASTERDATA}/WatchChanges": _APPROVAL_CHECKERS,
    # Revocations in force, polled by every service that verifies access tokens; no token:
    # the caller's certificate is its credential.
    f"/{TRUST}/ListRevocations": frozenset({"masterdata", "privacy", "results", "documents"}),
    # Acting for someone else: the trust service checks a representation at token exchange
    # (the acting citizen's token forwarded); privacy asks the population register who a
    # citizen's children are (who is a parent of whom, birth dates).
    f"/{REPRESENTATION}/CheckRepresentation": frozenset({"trust"}),
    f"/{POPULATION}/GetFamily": frozenset({"privacy"}),
    # Events from the data services' outbox dispatchers (services/common/outbox.py).
    f"/{NOTIFICATIONS}/PublishEvents": frozenset({"results", "documents", "privacy"}),
    # Before a notification leaves: Blocks, Shields and reservations of the recipient.
    f"/{PRIVACY}/CheckNotificationAccess": frozenset({"notifications"}),
}

# Internal methods a workload may call with its certificate alone, without an end user's
# token (a background job: the notifications service matching events has no user at hand).
# Other allowed callers still forward the end user's token.
CERTIFICATE_CREDENTIAL: dict[str, frozenset[str]] = {
    f"/{MASTERDATA}/CheckGpList": frozenset({"notifications"}),
    # Privacy follows the change feed to drop cached approvals (it holds no token of its
    # own; the events name HPR and organisation numbers, never a patient).
    f"/{MASTERDATA}/WatchChanges": frozenset({"privacy"}),
    f"/{PRIVACY}/CheckNotificationAccess": frozenset({"notifications"}),
    f"/{NOTIFICATIONS}/PublishEvents": frozenset({"results", "documents", "privacy"}),
}


def certificate_is_credential(method: str, peer: str | None) -> bool:
    """May `peer` call `method` without a user token (its certificate is its credential)?"""
    return peer is not None and peer in CERTIFICATE_CREDENTIAL.get(method, frozenset())


# Calls between workloads on *public* methods (the token decides; listed for the network
# policies and the trust-model table): every service fetches the trust service's JWKS, the
# trust service reads organisations from master data, the edge calls every public method.
PUBLIC_PEER_CALLS: dict[tuple[str, str], tuple[str, ...]] = {
    ("trust", "masterdata"): (f"/{MASTERDATA}/GetOrganization",),
    ("masterdata", "trust"): (f"/{TRUST}/GetJwks",),
    ("privacy", "trust"): (f"/{TRUST}/GetJwks",),
    ("results", "trust"): (f"/{TRUST}/GetJwks",),
    ("documents", "trust"): (f"/{TRUST}/GetJwks",),
    ("notifications", "trust"): (f"/{TRUST}/GetJwks",),
}


FORWARDED = "the end user's token, forwarded as `x-samhandling-user-context`"
# What an internal method takes besides the caller's certificate, where not FORWARDED.
USER_CONTEXT: dict[str, str] = {
    f"/{MASTERDATA}/CheckPractitionerApproval": (
        "the end user's token, forwarded (trust at login: its own service token)"
    ),
    f"/{MASTERDATA}/WatchChanges": (
        "privacy: none (the certificate); trust: its own service token"
    ),
    f"/{MASTERDATA}/FindPractitionerByIdentity": "the trust service's own service token",
    f"/{TRUST}/ListRevocations": "none: the certificate is the credential",
    f"/{PRIVACY}/ScreenResearchExport": (
        "none: the certificate is the credential (the registry, authenticated by results at "
        "kick-off, is named in the request)"
    ),
    f"/{MASTERDATA}/CheckGpList": (
        "privacy: the end user's token, forwarded; notifications: none (the certificate)"
    ),
    f"/{PRIVACY}/CheckNotificationAccess": "none: the certificate is the credential",
    f"/{NOTIFICATIONS}/PublishEvents": "none: the certificate is the credential",
}


def allowed_callers(method: str) -> frozenset[str] | None:
    """Workloads allowed to call `method`, or None for a public method (any mesh workload)."""
    return INTERNAL_METHODS.get(method)


def internal_methods_of(full_service_name: str) -> frozenset[str]:
    """The internal methods of one gRPC service, e.g. for its servicer's INTERNAL_METHODS."""
    prefix = f"/{full_service_name}/"
    return frozenset(m for m in INTERNAL_METHODS if m.startswith(prefix))


def edge_keys() -> set[str]:
    """The methods as routes.yaml names them ("package.Service/Method")."""
    return {m.lstrip("/") for m in INTERNAL_METHODS}


def _service_of(method: str) -> str:
    package = method.lstrip("/").split("/", 1)[0].rsplit(".", 1)[0]
    return package.split(".")[1]  # samhandling.<service>.v1


def allowed_paths(public_services: Iterable[str]) -> set[tuple[str, str]]:
    """(caller, callee) workload pairs that may talk at all: the edge to every service with
    a public surface, and every declared internal or peer call."""
    paths = {(EDGE, name) for name in public_services}
    for method, callers in INTERNAL_METHODS.items():
        paths |= {(caller, _service_of(method)) for caller in callers}
    paths |= set(PUBLIC_PEER_CALLS)
    return paths


def trust_model_table() -> str:
    """Markdown: who may call what, with which identity (copied into the READMEs)."""
    rows = [
        "| caller (certificate `spiffe://samhandling/<name>`) | may call "
        "| with which user context |",
        "|---|---|---|",
        "| `edge` (Envoy) | every public method (a `google.api.http` route) | the partner's "
        "or citizen's token (DPoP-bound where issued so), checked again by the service |",
    ]
    for (caller, callee), methods in sorted(PUBLIC_PEER_CALLS.items()):
        names = ", ".join(m.rsplit("/", 1)[1] for m in methods)
        rows.append(f"| `{caller}` | {callee}: {names} (public) | its own token, or none |")
    by_callers: dict[tuple[frozenset[str], str], list[str]] = {}
    for method, callers in INTERNAL_METHODS.items():
        context = USER_CONTEXT.get(method, FORWARDED)
        by_callers.setdefault((callers, context), []).append(method)
    for (callers, context), grouped in by_callers.items():
        names = ", ".join(f"{_service_of(m)}: {m.rsplit('/', 1)[1]}" for m in grouped)
        who = ", ".join(f"`{c}`" for c in sorted(callers))
        rows.append(f"| {who} | {names} (internal) | {context} |")
    rows.append(
        "| anyone else, or no client certificate | internal methods: PERMISSION_DENIED "
        "`CALLER_NOT_ALLOWED` / UNAUTHENTICATED `NO_CLIENT_CERTIFICATE`; no TLS: no connection "
        "| — |"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    print(trust_model_table())
