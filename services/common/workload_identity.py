"""Workload identity inside the mesh: a certificate authority and one X.509 certificate per
workload, for mutual TLS on every hop (edge -> service, service -> service).

A workload's identity is the SPIFFE ID in its certificate's URI SAN,
`spiffe://samhandling/<name>` (the services in services.common.registry, plus `edge`). The
certificate also names the workload as a DNS SAN (`<name>`), which is what gRPC checks
against the target name a client expects (`grpc.ssl_target_name_override`), so a client
knows it reached the service it meant, whatever address it dialled.

Files in the mesh TLS directory (`SAMHANDLING_MESH_TLS_DIR`, default
`$SAMHANDLING_VAR_DIR/mesh-tls`, i.e. `var/mesh-tls`):

    ca.pem               the mesh CA certificate (every workload trusts it)
    ca-key.pem           the CA's private key: only where certificates are issued
                         (`deploy/local/mesh.py`, `python -m deploy.k8s.mesh_ca`), never in a pod
    <name>.pem           the workload's certificate
    <name>-key.pem       its private key (PKCS#8, unencrypted, mode 0600)

`SAMHANDLING_MESH_TLS=off` turns mutual TLS off for tests only: servers then refuse to bind
anything but a loopback address.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.common import timestamps
from services.common.settings import MeshSettings, mesh

TRUST_DOMAIN = "samhandling"
SPIFFE_PREFIX = f"spiffe://{TRUST_DOMAIN}/"
EDGE = "edge"
CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
CA_DAYS = 3650
WORKLOAD_DAYS = 397  # re-run the issuing command (or let cert-manager renew) within a year

# Envoy's x-forwarded-client-cert header: set by the edge's internal listener (which requires
# a mesh client certificate) and stripped from everything arriving at the public listener.
XFCC_HEADER = "x-forwarded-client-cert"


def spiffe_id(name: str) -> str:
    return f"{SPIFFE_PREFIX}{name}"


def workload_from_uri(uri: str) -> str | None:
    """`spiffe://samhandling/results` -> `results`; anything else -> None."""
    if uri.startswith(SPIFFE_PREFIX):
        name = uri[len(SPIFFE_PREFIX) :]
        if name and "/" not in name:
            return name
    return None


# Workloads outside the registry that still run behind the edge: the benchmark Echo service.
EXTRA_WORKLOADS = ("bench",)


def mesh_workloads() -> list[str]:
    """Every workload that gets a certificate: the edge and the registry's services."""
    from services.common.registry import SERVICES

    return [EDGE, *SERVICES, *EXTRA_WORKLOADS]


# --- issuing ---------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return timestamps.utcnow()


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_ca(directory: Path) -> None:
    """A fresh CA (P-256, self-signed, ten years) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Samhandling mesh CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory / CA_KEY_FILE, _key_pem(key), private=True)
    _write(directory / CA_FILE, cert.public_bytes(serialization.Encoding.PEM))


def issue(directory: Path, name: str, extra_dns: Sequence[str] = ()) -> None:
    """`<name>.pem` and `<name>-key.pem`, signed by the CA in `directory`: usable as server
    and as client certificate (mTLS in both directions)."""
    ca_key = serialization.load_pem_private_key((directory / CA_KEY_FILE).read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((directory / CA_FILE).read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the mesh CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_id(name)),
        x509.DNSName(name),
        *(x509.DNSName(d) for d in extra_dns),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=WORKLOAD_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / f"{name}-key.pem", _key_pem(key), private=True)
    _write(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))


def ensure(directory: Path, names: Iterable[str] | None = None) -> Path:
    """The CA and a certificate for each of `names` (default: every mesh workload), created
    where missing; existing files are kept, so restarting `make run` keeps its identities."""
    if not (directory / CA_FILE).exists():
        create_ca(directory)
    for name in names if names is not None else mesh_workloads():
        if not (directory / f"{name}.pem").exists():
            issue(directory, name)
    return directory


# --- loading ---------------------------------------------------------------------------------


class MeshTlsError(RuntimeError):
    pass


def tls_enabled(env: Mapping[str, str] | None = None) -> bool:
    """SAMHANDLING_MESH_TLS (on unless off/0/false/no), from the mesh settings or `env`."""
    return (mesh() if env is None else MeshSettings.from_env(env)).mesh_tls


def tls_dir(env: Mapping[str, str] | None = None) -> Path:
    """SAMHANDLING_MESH_TLS_DIR, else <SAMHANDLING_VAR_DIR>/mesh-tls."""
    return (mesh() if env is None else MeshSettings.from_env(env)).mesh_tls_dir


@dataclass(frozen=True)
class WorkloadCredentials:
    name: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


@lru_cache(maxsize=64)
def _load(directory: str, name: str) -> WorkloadCredentials:
    base = Path(directory)
    try:
        return WorkloadCredentials(
            name,
            (base / CA_FILE).read_bytes(),
            (base / f"{name}.pem").read_bytes(),
            (base / f"{name}-key.pem").read_bytes(),
        )
    except OSError as exc:
        raise MeshTlsError(
            f"mesh TLS credentials for {name!r} missing in {base} (SAMHANDLING_MESH_TLS_DIR): "
            "run `make run` once, or `python -m deploy.k8s.mesh_ca`, or set "
            "SAMHANDLING_MESH_TLS=off in tests"
        ) from exc


def credentials(name: str, directory: Path | None = None) -> WorkloadCredentials:
    """The CA and `name`'s certificate and key (read once per directory and name)."""
    return _load(str((directory or tls_dir()).resolve()), name)


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the local workload (who this process is when it calls out) ------------------------------

# Set by the call pipeline while a service handles a call, so a call made on its behalf
# presents that service's certificate (several services share one process in tests).
_serving: contextvars.ContextVar[str | None] = contextvars.ContextVar("serving", default=None)


def serving(name: str | None) -> contextvars.Token[str | None]:
    return _serving.set(name)


def reset_serving(token: contextvars.Token[str | None]) -> None:
    _serving.reset(token)


def serving_workload() -> str | None:
    """The in-process service whose call is being handled, if any."""
    return _serving.get()


def local_workload() -> str:
    """The identity this process presents on an outgoing call: the service whose call is
    being handled, else `SAMHANDLING_WORKLOAD` (set per process by the launchers and the
    Kubernetes manifests; `serve()` sets it to the service it runs)."""
    name = _serving.get() or mesh().workload
    if not name:
        raise MeshTlsError(
            "no workload identity for an outgoing call: set SAMHANDLING_WORKLOAD (or "
            "SAMHANDLING_MESH_TLS=off in tests)"
        )
    return name


# --- the caller's identity, as the server verified it ----------------------------------------


def peer_workload(auth_context: Mapping[str, Sequence[bytes]]) -> str | None:
    """The workload named in the verified client certificate (URI SAN), or None when the
    connection carries no verified certificate (plaintext, or no client certificate)."""
    for san in auth_context.get("x509_subject_alternative_name", ()):
        name = workload_from_uri(san.decode(errors="replace"))
        if name is not None:
            return name
    return None


def xfcc_workload(header: str) -> str | None:
    """The workload in Envoy's `x-forwarded-client-cert` (one element, `URI=spiffe://...`).

    Only meaningful when the direct peer is the edge: its internal listener verified that
    certificate (SANITIZE_SET), and its public listener strips the header from clients.
    Several elements (a chain of proxies) are not expected and yield None.
    """
    if not header or "," in header:
        return None
    for part in header.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "uri":
            return workload_from_uri(value.strip().strip('"'))
    return None


# The verified caller of the call being handled (set by the call pipeline).
_peer: contextvars.ContextVar[str | None] = contextvars.ContextVar("peer", default=None)


def current_peer() -> str | None:
    """The calling workload (`edge`, `results`, ...) of the call being handled, from its
    verified client certificate (or, behind the edge's internal listener, the certificate
    the edge verified); None without one."""
    return _peer.get()


def set_peer(name: str | None) -> contextvars.Token[str | None]:
    return _peer.set(name)


def reset_peer(token: contextvars.Token[str | None]) -> None:
    _peer.reset(token)


def caller_workload(
    auth_context: Mapping[str, Sequence[bytes]], metadata: Mapping[str, str]
) -> str | None:
    """Who is calling: the certificate's workload; for the edge, the workload its internal
    listener verified (x-forwarded-client-cert) when it relays a service's call."""
    direct = peer_workload(auth_context)
    if direct == EDGE and XFCC_HEADER in metadata:
        return xfcc_workload(metadata[XFCC_HEADER])
    return direct


def main() -> None:
    """`python -m services.common.workload_identity DIR`: the CA and every workload's
    certificate in DIR, created where missing (Compose's one-off `mesh-ca` service)."""
    import sys

    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else tls_dir()
    ensure(directory)
    print(directory)


if __name__ == "__main__":
    main()
