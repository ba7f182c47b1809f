"""Splitting an import file into chunks of whole rows (service_layer/import_jobs.py)."""

from __future__ import annotations

import pytest

from services.common.errors import DomainError
from services.masterdata.service_layer.import_jobs import split


def test_csv_chunks_keep_the_header_and_whole_records() -> None:
    data = b'a,b\n1,x\n2,"two\nlines"\n3,z\n\n4,w\n'
    chunks = split(data, "csv", rows_per_chunk=2)
    assert [c.rows for c in chunks] == [2, 2]
    assert chunks[0].data == b'a,b\n1,x\n2,"two\nlines"\n'
    assert chunks[1].data.startswith(b"a,b\n3,z\n")
    # chunk line 2 (its first record) is line 5 of the file (the quoted record spans 3-4)
    assert 2 + chunks[1].line_offset == 5 and chunks[1].header_lines == 1


def test_json_lines_chunks_map_back_to_file_lines() -> None:
    chunks = split(b"{}\n\n{}\n{}\n", "jsonl", rows_per_chunk=2)
    assert [c.rows for c in chunks] == [1, 2]
    assert 1 + chunks[1].line_offset == 3


def test_a_file_csv_cannot_read_is_a_400() -> None:
    with pytest.raises(DomainError) as err:
        split(b"a\n" + b"x" * 200_000 + b"\n", "csv")
    assert err.value.reason == "INVALID_IMPORT_FILE"
