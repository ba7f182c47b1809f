"""A citizen's view carries what his app needs to verify every entry against a signed tree
head; the offline verifier (services/privacy/verify_entries.py) checks it from the REST
JSON alone; heads, proofs and keys are served without a token. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import json_format
from samhandling.privacy.v1 import privacy_service_pb2 as pb

from services.privacy import verify_entries
from services.privacy.adapters import orm
from services.privacy.domain.merkle import leaf_hash, verify_consistency, verify_inclusion
from tests.integration.privacy.conftest import Privacy
from tests.integration.privacy.test_decisions import decide

pytestmark = pytest.mark.integration


def rest_json(message: Any) -> dict[str, Any]:
    """The JSON the edge returns (proto field names, int64 as strings, bytes base64)."""
    return json.loads(
        json_format.MessageToJson(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )


def page(p: Privacy) -> pb.SearchAccessEventsResponse:
    return p.stub.SearchAccessEvents(
        pb.SearchAccessEventsRequest(), metadata=p.citizen(), timeout=5
    )


def keys_file(p: Privacy, tmp_path: Path) -> Path:
    # Public: no token.
    keys = p.stub.GetLogPublicKeys(pb.GetLogPublicKeysRequest(), timeout=5)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(rest_json(keys)))
    return path


def run_verifier(tmp_path: Path, body: dict[str, Any], keys: Path, *extra: str) -> int:
    path = tmp_path / "page.json"
    path.write_text(json.dumps(body))
    return verify_entries.main([str(path), "--public-keys", str(keys), *extra])


def test_every_entry_of_the_citizens_view_verifies(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(5):
        decide(privacy, privacy.doctor())
    reply = page(privacy)
    head = reply.tree_head
    assert head.tree_size >= 5  # signed on demand to cover the page
    for event in reply.access_events:
        v = event.verification
        assert v.tree_size == head.tree_size and json.loads(v.content)["event_id"] == (
            event.access_event_id
        )
        assert verify_inclusion(
            v.leaf_index, v.tree_size, leaf_hash(v.leaf), list(v.inclusion_path), head.root_hash
        )
    body = rest_json(reply)
    keys = keys_file(privacy, tmp_path)
    assert run_verifier(tmp_path, body, keys) == 0
    assert "OK: 5 entries" in capsys.readouterr().out


def test_the_first_entry_of_a_fresh_log_verifies(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tree of one leaf has an empty inclusion path; the entry is still covered by the
    head (found when the e2e suite ran in random order on a fresh mesh)."""
    decide(privacy, privacy.doctor())
    reply = page(privacy)
    assert reply.tree_head.tree_size == 1
    (event,) = reply.access_events
    assert event.verification.tree_size == 1 and not event.verification.inclusion_path
    assert run_verifier(tmp_path, rest_json(reply), keys_file(privacy, tmp_path)) == 0
    assert "OK: 1 entries" in capsys.readouterr().out


def test_the_offline_verifier_catches_a_changed_entry(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decide(privacy, privacy.doctor(), emergency=True, purpose_of_use="BTG")
    body = rest_json(page(privacy))
    keys = keys_file(privacy, tmp_path)
    event = body["access_events"][0]
    assert event["emergency"] is True
    event["emergency"] = False  # hidden emergency
    assert run_verifier(tmp_path, body, keys) == 1
    assert "shown emergency differs from the logged content" in capsys.readouterr().out
    event["emergency"] = True
    content = json.loads(base64.b64decode(event["verification"]["content"]))
    content["emergency"] = False
    event["verification"]["content"] = base64.b64encode(
        json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    ).decode()
    event["emergency"] = False
    assert run_verifier(tmp_path, body, keys) == 1
    assert "content does not match the leaf's content_hash" in capsys.readouterr().out


def test_a_head_signed_by_another_key_is_refused(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.privacy.adapters.signing import TreeHeadSigner, load_kek

    decide(privacy, privacy.doctor())
    body = rest_json(page(privacy))
    keys = keys_file(privacy, tmp_path)
    other = TreeHeadSigner.load_or_create(tmp_path / "other-keys", load_kek())
    head = body["tree_head"]
    forged = other.sign(int(head["tree_size"]), base64.b64decode(head["root_hash"]), 1)
    head.update(key_id=forged.key_id, signature=base64.b64encode(forged.signature).decode())
    assert run_verifier(tmp_path, body, keys) == 1
    assert "bad signature" in capsys.readouterr().out


def test_consistency_between_visits(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decide(privacy, privacy.doctor())
    first = rest_json(page(privacy))["tree_head"]
    (tmp_path / "old-head.json").write_text(json.dumps(first))
    for _ in range(6):
        decide(privacy, privacy.doctor())
    second = rest_json(page(privacy))
    old_size, new_size = int(first["tree_size"]), int(second["tree_head"]["tree_size"])
    proof = privacy.stub.GetConsistencyProof(
        pb.GetConsistencyProofRequest(first_tree_size=old_size, second_tree_size=new_size),
        timeout=5,
    )
    assert verify_consistency(
        old_size,
        new_size,
        base64.b64decode(first["root_hash"]),
        base64.b64decode(second["tree_head"]["root_hash"]),
        list(proof.consistency_path),
    )
    (tmp_path / "proof.json").write_text(json.dumps(rest_json(proof)))
    keys = keys_file(privacy, tmp_path)
    extra = ["--previous-head", str(tmp_path / "old-head.json")]
    extra += ["--consistency-proof", str(tmp_path / "proof.json")]
    assert run_verifier(tmp_path, second, keys, *extra) == 0
    # An insider rewrites the first entry (its leaf) before the next head is signed: the
    # new head cannot be proven to extend the head the citizen kept.
    with privacy.setup.service.engine.begin() as conn:
        t = orm.access_log
        conn.execute(sa.update(t).where(t.c.seq == 1).values(leaf_hash=b"\x01" * 32))
    decide(privacy, privacy.doctor())
    third = rest_json(page(privacy))
    proof = privacy.stub.GetConsistencyProof(
        pb.GetConsistencyProofRequest(
            first_tree_size=old_size, second_tree_size=int(third["tree_head"]["tree_size"])
        ),
        timeout=5,
    )
    (tmp_path / "proof.json").write_text(json.dumps(rest_json(proof)))
    capsys.readouterr()
    assert run_verifier(tmp_path, third, keys, *extra) == 1
    assert "does not extend the previous head" in capsys.readouterr().out


def test_heads_and_proofs_are_public_and_validated(privacy: Privacy) -> None:
    for _ in range(3):
        decide(privacy, privacy.doctor())
    head = privacy.stub.GetSignedTreeHead(pb.GetSignedTreeHeadRequest(), timeout=5)
    assert head.tree_size == 3 and head.log_id == "samhandling-privacy-access-log"
    proof = privacy.stub.GetInclusionProof(
        pb.GetInclusionProofRequest(leaf_index=1, tree_size=3), timeout=5
    )
    with privacy.setup.service.engine.connect() as conn:
        leaf = conn.execute(
            sa.select(orm.access_log.c.leaf_hash).where(orm.access_log.c.seq == 2)
        ).scalar_one()
    assert verify_inclusion(1, 3, bytes(leaf), list(proof.inclusion_path), head.root_hash)
    with pytest.raises(grpc.RpcError) as err:
        privacy.stub.GetInclusionProof(
            pb.GetInclusionProofRequest(leaf_index=0, tree_size=99), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        privacy.stub.GetSignedTreeHead(pb.GetSignedTreeHeadRequest(tree_size=2), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_access_entry_listing_several_resources_verifies_and_names_each(
    privacy: Privacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#15: one access entry per read; the verifier checks that the resources shown are
    exactly the logged ones (a resource left out of the view is caught)."""
    decided = decide(privacy, privacy.doctor())
    ids = ["r1", "r2", "r3"]
    privacy.stub.RecordAccess(
        pb.RecordAccessRequest(
            decision_event_id=decided.access_event_id,
            patient_id=privacy.people.patient,
            action=pb.ACTION_SEARCH,
            resources=[
                pb.AccessedResource(resource_type="DiagnosticReport", resource_id=i) for i in ids
            ],
        ),
        metadata=privacy.doctor(),
        timeout=5,
    )
    body = rest_json(page(privacy))
    keys = keys_file(privacy, tmp_path)
    accessed = [e for e in body["access_events"] if e["event_type"] == "ACCESS_EVENT_TYPE_ACCESS"]
    assert len(accessed) == 1
    assert [r["resource_id"] for r in accessed[0]["resources"]] == ids
    assert run_verifier(tmp_path, body, keys) == 0
    accessed[0]["resources"].pop()  # a resource hidden from the citizen
    assert run_verifier(tmp_path, body, keys) == 1
    assert "shown resources differ from the logged content" in capsys.readouterr().out
