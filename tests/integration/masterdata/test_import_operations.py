"""Long-running imports (issue 17 item 8, AIP-151): StartPractitionerImport /
StartOrganizationImport / UploadImport answer a google.longrunning.Operation at once;
GetImportOperation shows the rows processed and every rejected row with its line in the
original file; the done operation's response is the synchronous import's response."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest
from google.longrunning import operations_proto_pb2 as lro
from samhandling.masterdata.v1 import masterdata_service_pb2 as pb

from services.common.tokens import Scopes
from tests.integration.masterdata.conftest import MasterDataUnderTest

HEADER = "hpr_number,given_name,family_name,approvals"


def _wait(masterdata: MasterDataUnderTest, operation: lro.Operation) -> lro.Operation:
    for _ in range(600):  # the worker thread finishes; this only bounds a hang
        operation = masterdata.stub.GetImportOperation(
            pb.GetImportOperationRequest(name=operation.name), metadata=masterdata.admin
        )
        if operation.done:
            return operation
        time.sleep(0.05)
    raise AssertionError(f"{operation.name} never finished")


def _metadata(operation: lro.Operation) -> pb.ImportOperationMetadata:
    meta = pb.ImportOperationMetadata()
    assert operation.metadata.Unpack(meta)
    return meta


def test_practitioner_import_runs_in_chunks_and_reports_rows(
    masterdata: MasterDataUnderTest,
) -> None:
    masterdata.setup.jobs._rows = 3  # several chunks from a small file
    rows = [f"40000{i:02d},Navn{i},Etternavn,LE:1::" for i in range(10)]
    rows[7] = "4000007,Feil,Kategori,XX9:1::"  # line 9 of the file, in the third chunk
    data = ("\n".join([HEADER, *rows]) + "\n").encode()
    started = masterdata.stub.StartPractitionerImport(
        pb.StartPractitionerImportRequest(format=pb.IMPORT_FORMAT_CSV, data=data),
        metadata=masterdata.admin,
    )
    assert started.name.startswith("operations/")
    assert _metadata(started).total_rows == 10
    done = _wait(masterdata, started)
    assert not done.HasField("error")
    meta = _metadata(done)
    assert (meta.processed_rows, meta.imported_count, meta.skipped_count) == (10, 9, 1)
    assert [(e.line, e.field) for e in meta.errors] == [(9, "approvals[0].category")]
    assert meta.update_time.ToDatetime() >= meta.create_time.ToDatetime()
    response = pb.ImportPractitionersResponse()
    assert done.response.Unpack(response)
    assert response.committed and response.imported_count == 9
    assert [e.line for e in response.errors] == [9]
    stored = masterdata.stub.GetPractitioner(
        pb.GetPractitionerRequest(hpr_number="4000009"), metadata=masterdata.reader
    )
    assert stored.given_name == "Navn9"


def test_upload_streams_a_file_in_chunks(masterdata: MasterDataUnderTest) -> None:
    lines = [
        json.dumps({"hpr_number": f"41000{i:02d}", "given_name": "Strøm", "family_name": f"{i}"})
        for i in range(30)
    ]
    data = ("\n".join(lines) + "\n").encode()

    def messages() -> Iterator[pb.UploadImportRequest]:
        yield pb.UploadImportRequest(
            kind=pb.IMPORT_KIND_PRACTITIONERS, format=pb.IMPORT_FORMAT_JSON_LINES
        )
        for start in range(0, len(data), 700):  # pieces cut anywhere, even mid-line
            yield pb.UploadImportRequest(chunk=data[start : start + 700])

    started = masterdata.stub.UploadImport(messages(), metadata=masterdata.admin)
    done = _wait(masterdata, started)
    meta = _metadata(done)
    assert (meta.total_rows, meta.imported_count, meta.skipped_count) == (30, 30, 0)


def test_organisation_import_and_validate_only(masterdata: MasterDataUnderTest) -> None:
    data = b"org_number,name,kind\n974589095,Testsykehuset,HOSPITAL\n123,Feil nummer,HOSPITAL\n"
    started = masterdata.stub.StartOrganizationImport(
        pb.StartOrganizationImportRequest(
            format=pb.IMPORT_FORMAT_CSV, data=data, validate_only=True
        ),
        metadata=masterdata.admin,
    )
    done = _wait(masterdata, started)
    response = pb.ImportOrganizationsResponse()
    assert done.response.Unpack(response)
    assert not response.committed and response.imported_count == 1
    assert [e.line for e in response.errors] == [3]


def test_an_operation_is_only_its_owners(masterdata: MasterDataUnderTest) -> None:
    started = masterdata.stub.StartPractitionerImport(
        pb.StartPractitionerImportRequest(
            format=pb.IMPORT_FORMAT_CSV, data=f"{HEADER}\n4200001,A,B,LE:1::\n".encode()
        ),
        metadata=masterdata.admin,
    )
    other = masterdata.mint.metadata(
        masterdata.mint.token("masterdata", [Scopes.MASTERDATA_ADMIN], client_id="other-admin")
    )
    with pytest.raises(grpc.RpcError) as err:
        masterdata.stub.GetImportOperation(
            pb.GetImportOperationRequest(name=started.name), metadata=other
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        masterdata.stub.StartPractitionerImport(
            pb.StartPractitionerImportRequest(format=pb.IMPORT_FORMAT_CSV, data=b"x"),
            metadata=masterdata.reader,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    _wait(masterdata, started)
