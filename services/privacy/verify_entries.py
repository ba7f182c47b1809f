"""Check a citizen's access-log entries offline: `python -m services.privacy.verify_entries`.

    python -m services.privacy.verify_entries page.json --public-keys keys.json
    python -m services.privacy.verify_entries page.json --public-keys log.pem \\
        --previous-head old-head.json --consistency-proof proof.json

`page.json` is the body of `POST /v1/privacy/access-events:search` as the REST API returns
it; `keys.json` the body of `GET /v1/privacy/access-log/keys` (a JWKS) or a PEM public key
obtained another way (e.g. published by the operator). Needs nothing else: no database,
no network. The steps (services/privacy/README.md, "Verifying entries"):

1. the tree head's Ed25519 signature, with the key its key_id names;
2. per entry: SHA-256 of `verification.content` equals the leaf's content_hash; the leaf's
   index, event id, type and time equal the entry's; the content equals what the entry
   shows (each resource it lists too); leaf hash = SHA-256(0x00 || leaf); the inclusion
   path leads from the leaf hash to the head's root hash (RFC 9162 §2.1.3.2);
3. optionally, with a head kept from an earlier visit and `GET
   /v1/privacy/access-log/consistency-proof`: the new head extends the old one (RFC 9162
   §2.1.4.2), i.e. nothing seen before was rewritten or removed since.

Exit status 0 when everything verifies, 1 otherwise (each failure printed).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.privacy.adapters.signing import TreeHeadVerifier
from services.privacy.domain.merkle import (
    LOG_ID,
    TreeHead,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from services.privacy.domain.model import listed_resources

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _get(obj: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """A field by its proto name or its lowerCamelCase JSON name."""
    if name in obj:
        return obj[name]
    parts = name.split("_")
    return obj.get(parts[0] + "".join(p.title() for p in parts[1:]), default)


def _bytes(value: Any) -> bytes:
    text = str(value or "")
    return base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4))


def head_from_json(obj: Mapping[str, Any]) -> TreeHead:
    """A SignedTreeHead as the REST API returns it (int64 as strings, bytes as base64)."""
    if _get(obj, "log_id", LOG_ID) != LOG_ID:
        raise ValueError(f"not a head of {LOG_ID}")
    return TreeHead(
        int(_get(obj, "tree_size", 0)),
        _bytes(_get(obj, "root_hash")),
        int(_get(obj, "timestamp_us", 0)),
        str(_get(obj, "key_id", "")),
        _bytes(_get(obj, "signature")),
    )


def _time_us(value: str) -> int:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (parsed - EPOCH) // dt.timedelta(microseconds=1)


def check_entry(event: Mapping[str, Any], head: TreeHead) -> list[str]:
    """The problems with one entry (empty: it is in the log the head commits to)."""
    name = str(_get(event, "access_event_id", "?"))
    v = _get(event, "verification") or {}
    leaf = _bytes(_get(v, "leaf"))
    content = _bytes(_get(v, "content"))
    if not leaf or not content:
        return [f"{name}: no verification data"]
    problems = []
    try:
        leaf_fields = json.loads(leaf)
        content_fields = json.loads(content)
    except ValueError:
        return [f"{name}: leaf or content is not JSON"]
    index = int(_get(v, "leaf_index", 0))
    # Step 2a: the content belongs to the leaf.
    if hashlib.sha256(content).hexdigest() != leaf_fields.get("content_hash"):
        problems.append(f"{name}: content does not match the leaf's content_hash")
    # Step 2b: the leaf is this entry's.
    expected = {
        "index": index,
        "event_id": name,
        "entry_type": content_fields.get("entry_type"),
        "event_time_us": content_fields.get("event_time"),
    }
    for key, value in expected.items():
        if leaf_fields.get(key) != value:
            problems.append(f"{name}: leaf {key} does not match the entry")
    # Step 2c: what is shown is what was logged.
    shown = {
        "event_id": name,
        "resource_type": _get(event, "resource_type", ""),
        "resource_id": _get(event, "resource_id", ""),
        "purpose": _get(event, "purpose_of_use", ""),
        "trace_id": _get(event, "trace_id", ""),
        "decision_event_id": _get(event, "decision_event_id", ""),
        "emergency": bool(_get(event, "emergency", False)),
    }
    for key, value in shown.items():
        if (content_fields.get(key) or type(value)()) != value:
            problems.append(f"{name}: shown {key} differs from the logged content")
    # Step 2c (continued): who acted, and whether for someone else (a parent, a power of
    # attorney): an app cannot hide that another person acted for the citizen.
    actor = _get(event, "actor") or {}
    details = content_fields.get("details") or {}
    logged = details.get("representation") if isinstance(details, Mapping) else None
    logged_relation = str(logged.get("relation", "")) if isinstance(logged, Mapping) else ""
    shown_relation = str(_get(actor, "representation", "") or "")
    if shown_relation.endswith("UNSPECIFIED"):
        shown_relation = ""
    if shown_relation != logged_relation:
        problems.append(f"{name}: shown representation differs from the logged content")
    if str(_get(actor, "display_name", "") or "") != str(content_fields.get("actor_name") or ""):
        problems.append(f"{name}: shown actor differs from the logged content")
    # Step 2c (continued): the resources shown are the ones logged, none added or left out
    # (an access entry of a read lists every resource it returned).
    shown_resources = [
        (str(_get(r, "resource_type", "")), str(_get(r, "resource_id", "")))
        for r in _get(event, "resources", [])
    ]
    if shown_resources != listed_resources(content_fields):
        problems.append(f"{name}: shown resources differ from the logged content")
    event_time = _get(event, "event_time")
    if event_time and _time_us(str(event_time)) != content_fields.get("event_time"):
        problems.append(f"{name}: shown time differs from the logged content")
    # Step 2d-e: the leaf is in the tree the head signs.
    path = [_bytes(p) for p in _get(v, "inclusion_path", [])]
    if int(_get(v, "tree_size", 0)) != head.tree_size:
        problems.append(f"{name}: proof is for another tree size than the head")
    elif not verify_inclusion(index, head.tree_size, leaf_hash(leaf), path, head.root_hash):
        problems.append(f"{name}: inclusion proof does not lead to the head's root")
    return problems


def check_page(
    page: Mapping[str, Any],
    keys: TreeHeadVerifier,
    previous: TreeHead | None = None,
    consistency: Mapping[str, Any] | None = None,
) -> tuple[int, list[str]]:
    """(entries checked, problems) for one SearchAccessEvents response."""
    raw_head = _get(page, "tree_head")
    if not raw_head:
        return 0, ["the response carries no signed tree head"]
    head = head_from_json(raw_head)
    problems: list[str] = []
    # Step 1.
    if not keys.check(head):
        problems.append(f"tree head of size {head.tree_size}: bad signature (key {head.key_id})")
    events = list(_get(page, "access_events", []))
    for event in events:
        problems += check_entry(event, head)
    # Step 3.
    if previous is not None:
        if not keys.check(previous):
            problems.append(f"previous head of size {previous.tree_size}: bad signature")
        proof = [_bytes(p) for p in _get(consistency or {}, "consistency_path", [])]
        if previous.tree_size > head.tree_size:
            problems.append("the log shrank since the previous head (rewound)")
        elif not verify_consistency(
            previous.tree_size, head.tree_size, previous.root_hash, head.root_hash, proof
        ):
            problems.append(
                f"the head of size {head.tree_size} does not extend the previous head of size "
                f"{previous.tree_size}: the log was rewritten"
            )
    return len(events), problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("page", type=Path, help="SearchAccessEvents response (REST JSON)")
    parser.add_argument("--public-keys", type=Path, required=True, help="JWKS or PEM")
    parser.add_argument("--previous-head", type=Path, default=None)
    parser.add_argument("--consistency-proof", type=Path, default=None)
    args = parser.parse_args(argv)
    keys = TreeHeadVerifier.from_file(args.public_keys)
    page = json.loads(args.page.read_text())
    previous = (
        head_from_json(json.loads(args.previous_head.read_text())) if args.previous_head else None
    )
    consistency = json.loads(args.consistency_proof.read_text()) if args.consistency_proof else None
    if previous is not None and consistency is None and previous.tree_size != 0:
        parser.error("--previous-head needs --consistency-proof")
    count, problems = check_page(page, keys, previous, consistency)
    for problem in problems:
        print(f"FAILED: {problem}")
    if not problems:
        print(f"OK: {count} entries are in the log the signed head commits to")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
