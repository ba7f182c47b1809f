"""Scan logs and exported spans for personal identity numbers.

    python -m deploy.local.pidscan var            # every *.log and *.jsonl under var/
    python -m deploy.local.pidscan a.log b.jsonl

Reports every 11-digit run that is a valid fødselsnummer, D- or H-number (checksums and
date), standing alone (not inside a longer number, hex id or token). Exit status 1 if any is
found. The issue's "done when": run it after `make demo` with the trace sink
(deploy/local/otlp_sink.py) writing var/traces.jsonl.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from services.common.identifiers import is_valid_pid

CANDIDATE = re.compile(r"(?<![0-9A-Za-z])\d{11}(?![0-9A-Za-z])")


def files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in (".log", ".jsonl"))
        elif path.exists():
            yield path


def findings(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, errors="replace") as text:
        for number, line in enumerate(text, 1):
            for match in CANDIDATE.finditer(line):
                if is_valid_pid(match.group()):
                    yield number, match.group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    found = 0
    scanned = 0
    for path in files(args.paths):
        scanned += 1
        for line, value in findings(path):
            found += 1
            # Never print the number itself: only where it is.
            print(f"{path}:{line}: identity number ({value[:2]}…)")
    print(f"scanned {scanned} files: {found} identity numbers")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
