"""The mesh on five hosts (issue 16, item 5): login through the edge on its own host, a
result written through the results replica on host a and read through the one on host b, a
document uploaded to documents on host a and downloaded from host b (the shared PostgreSQL
content store), and privacy's access log verifying afterwards."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from samhandling.documents.v1 import documents_service_pb2 as docs_pb
from samhandling.documents.v1 import documents_service_pb2_grpc as docs_grpc
from samhandling.results.v1 import results_service_pb2 as results_pb
from samhandling.results.v1 import results_service_pb2_grpc as results_grpc

from deploy.local.demo import Story, attestation
from deploy.local.hosts import HostMesh, host_of, ip
from deploy.local.mesh import health_channel
from services.common import auth
from services.trust.demo_client import DemoClient
from tests.e2e.multihost.conftest import bearer, verify_access_log

pytestmark = pytest.mark.multihost

LAB_CODE = {"system": "urn:oid:2.16.578.1.12.4.1.1.7280", "code": "NPU02319"}


def _stamp(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _result_request(patient_pid: str, lab_org: str) -> results_pb.CreateResultRequest:
    now = dt.datetime.now(dt.UTC)
    body: dict[str, Any] = {
        "request_id": f"multihost-{uuid.uuid4().hex}",
        "result": {
            "report_identifier": f"MH-{uuid.uuid4().hex[:10]}",
            "patient_id": patient_pid,
            "category": "RESULT_CATEGORY_LABORATORY",
            "code": LAB_CODE,
            "status": "RESULT_STATUS_FINAL",
            "effective_time": _stamp(now - dt.timedelta(hours=1)),
            "issued_time": _stamp(now),
            "performer_org_number": lab_org,
            "conclusion": "Written on host a, read on host b.",
            "observations": [
                {
                    "observation_id": "obs-1",
                    "code": LAB_CODE,
                    "status": "RESULT_STATUS_FINAL",
                    "value_quantity": {"value": 13.9, "unit": "g/dL"},
                }
            ],
        },
    }
    return json_format.ParseDict(body, results_pb.CreateResultRequest())


def _hospital_doctor(story: Story, patient_pid: str) -> str:
    """The hospital doctor's token (TestID login through the edge, care relationship with
    the patient), Bearer so a test can call one replica directly."""
    persona = story.person("hospital_doctor")
    client = DemoClient.load(story.demo_dir, "hospital-ehr", story.edge)
    registered = json.loads((story.demo_dir / "clients" / "hospital-ehr.json").read_text())
    details = {
        "type": auth.TRUST_FRAMEWORK_TYPE,
        "practitioner": {
            "authorization": {"code": "LE", "system": "urn:oid:2.16.578.1.12.4.1.1.9060"},
            "legal_entity": {
                "id": registered["orgnr_parent"],
                "system": "urn:oid:2.16.578.1.12.4.1.4.101",
            },
        },
        "care_relationship": {"purpose_of_use": {"code": "TREAT"}},
        "patients": [
            {"identifier": {"id": patient_pid, "system": "urn:oid:2.16.578.1.12.4.1.4.1"}}
        ],
    }
    return client.login(
        "samhandling:documents",
        "openid samhandling:documents/read samhandling:documents/write",
        None,
        hpr_number=persona["hpr_number"],
        authorization_details=[details],
    ).access_token


def test_every_process_runs_on_its_own_host(hosts: HostMesh) -> None:
    for key, proc in hosts.processes.items():
        where = ip("netns", "identify", str(proc.pid)).stdout.strip()
        assert where == hosts.network.namespace(host_of(key)), key
    assert {host_of(k) for k in hosts.processes} == set(hosts.network.hosts)
    results_a, results_b = hosts.replica_addresses["results"]
    assert results_a.split(":")[0] == hosts.network.address("a")
    assert results_b.split(":")[0] == hosts.network.address("b")


def test_a_replica_is_known_by_its_workload_name_not_its_address(hosts: HostMesh) -> None:
    """Mutual TLS across hosts: the certificate names the workload (SPIFFE URI and DNS SAN
    `results`), which clients check whatever address the host has; a client expecting
    another workload at that address gets no connection."""
    address = hosts.replica_addresses["results"][1]
    with health_channel(address, "results", hosts.tls_dir) as right:
        reply = health_pb2_grpc.HealthStub(right).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with health_channel(address, "privacy", hosts.tls_dir) as wrong:
        with pytest.raises(grpc.RpcError) as refused:
            health_pb2_grpc.HealthStub(wrong).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_practitioner_logs_in_through_the_edge_host(story: Story) -> None:
    token = story.gp_token()
    assert token.dpop is not None and token.claims["cnf"]["jkt"]
    reply = story.edge.call(
        "POST", "/v1/results:search", token, json={"patient_id": story.state["citizen"]["pid"]}
    )
    assert reply.status_code == 200, reply.text


def test_a_result_written_on_host_a_is_read_on_host_b(
    story: Story, replica: Callable[[str, int], grpc.Channel]
) -> None:
    citizen = story.person("citizen")
    lab = DemoClient.load(story.demo_dir, "lab-system", story.edge)
    writer = lab.client_credentials(
        "samhandling:results", "samhandling:results/write samhandling:results/read", None
    )
    on_a = results_grpc.ResultsServiceStub(replica("results", 0))
    created = on_a.CreateResult(
        _result_request(citizen["pid"], story.organisation("lab")),
        metadata=bearer(writer.access_token),
        timeout=15,
    )

    gp = story.gp_token()
    gp_bearer = DemoClient.load(story.demo_dir, "gp-ehr", story.edge).login(
        "samhandling:results",
        "openid samhandling:results/read",
        None,
        hpr_number=story.state["gp"]["hpr_number"],
        authorization_details=[
            attestation(
                story.state["gp"], "TREAT", story.state["gp"]["organisation"], citizen["pid"]
            )
        ],
    )
    on_b = results_grpc.ResultsServiceStub(replica("results", 1))
    read = on_b.GetResult(
        results_pb.GetResultRequest(result_id=created.result_id),
        metadata=bearer(gp_bearer.access_token),
        timeout=15,
    )
    assert read.result_id == created.result_id
    assert read.conclusion == "Written on host a, read on host b."
    # And through the edge with the DPoP-bound token, whichever replica answers.
    reply = story.edge.call("GET", f"/v1/results/{created.result_id}", gp)
    assert reply.status_code == 200, reply.text


def test_a_document_uploaded_on_host_a_downloads_on_host_b(
    story: Story, replica: Callable[[str, int], grpc.Channel]
) -> None:
    citizen = story.person("citizen")
    token = _hospital_doctor(story, citizen["pid"])
    content = b"%PDF-1.4\n% multihost: stored through host a\n" + uuid.uuid4().bytes * 4096
    on_a = docs_grpc.DocumentsServiceStub(replica("documents", 0))
    document = json_format.ParseDict(
        {
            "patient_id": citizen["pid"],
            "type_code": "A01-1",
            "class_code": "A01",
            "title": "Epikrise (multihost)",
            "content_type": "application/pdf",
        },
        docs_pb.Document(),
    )
    created = on_a.CreateDocument(
        docs_pb.CreateDocumentRequest(
            request_id=str(uuid.uuid4()), document=document, content=content
        ),
        metadata=bearer(token),
        timeout=30,
    )
    on_b = docs_grpc.DocumentsServiceStub(replica("documents", 1))
    chunks = on_b.GetDocumentContent(
        docs_pb.GetDocumentContentRequest(document_id=created.document_id),
        metadata=bearer(token),
        timeout=30,
    )
    assert b"".join(chunk.data for chunk in chunks) == content


def test_the_access_log_verifies(hosts: HostMesh, story: Story) -> None:
    token = story.gp_token()
    reply = story.edge.call(
        "POST", "/v1/results:search", token, json={"patient_id": story.state["citizen"]["pid"]}
    )
    assert reply.status_code == 200, reply.text
    report = verify_access_log(hosts)
    assert report["exit_status"] == 0, report
    assert report.get("ok", True), report


def test_namespaces_go_with_the_run(hosts: HostMesh) -> None:
    listing = ip("netns", "list").stdout
    assert all(hosts.network.namespace(h) in listing for h in hosts.network.hosts)
