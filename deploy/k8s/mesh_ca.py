"""The mesh CA for Kubernetes: a one-off command that writes one Secret per workload.

    python -m deploy.k8s.mesh_ca --ca-dir ~/samhandling-mesh-ca > mesh-tls-secrets.yaml
    kubectl apply -f mesh-tls-secrets.yaml      # then roll the Deployments

Creates the CA in `--ca-dir` on first use (keep that directory offline: it holds the CA's
private key) and a certificate per workload (`spiffe://samhandling/<name>`, every service and
the edge), then prints a Secret `samhandling-mesh-<name>` per workload holding only the CA
certificate and that workload's certificate and key. The generated Deployments mount their
own Secret at /etc/samhandling/mesh-tls. `--renew` re-issues the workload certificates (the
CA stays), e.g. yearly. cert-manager can issue the same Secrets instead (deploy/README.md).
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

import yaml

from services.common import workload_identity
from services.common.workload_identity import CA_FILE

NAMESPACE = "samhandling"


def secret_name(workload: str) -> str:
    return f"samhandling-mesh-{workload}"


def secrets(ca_dir: Path, renew: bool = False) -> list[dict[str, Any]]:
    names = workload_identity.mesh_workloads()
    if renew:
        for name in names:
            (ca_dir / f"{name}.pem").unlink(missing_ok=True)
    workload_identity.ensure(ca_dir, names)
    out = []
    for name in names:
        files = (CA_FILE, f"{name}.pem", f"{name}-key.pem")
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": secret_name(name),
                    "namespace": NAMESPACE,
                    "labels": {
                        "app.kubernetes.io/part-of": "samhandling",
                        "samhandling/workload": name,
                    },
                },
                "type": "Opaque",
                "data": {f: base64.b64encode((ca_dir / f).read_bytes()).decode() for f in files},
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ca-dir", type=Path, required=True, help="where the CA is kept")
    parser.add_argument("--out", type=Path, help="write the manifests here (default: stdout)")
    parser.add_argument("--renew", action="store_true", help="re-issue workload certificates")
    args = parser.parse_args()
    text = yaml.safe_dump_all(secrets(args.ca_dir, args.renew), sort_keys=False)
    if args.out:
        args.out.write_text(text)
        args.out.chmod(0o600)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
