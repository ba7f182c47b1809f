"""Scan logs and exported spans for personal identity numbers.

    python -m deploy.local.pidscan var            # every *.log and *.jsonl under var/
    python -m deploy.local.pidscan a.log b.jsonl
    python -m deploy.local.pidscan --demo var/demo-scan   # `make demo-scan`: see scan_demo()

Reports every 11-digit run that is a valid fødselsnummer, D- or H-number (checksums and
date), standing alone (not inside a longer number, hex id or token). Exit status 1 if any is
found. The issue's "done when": run it after `make demo` with the trace sink
(deploy/local/otlp_sink.py) writing var/traces.jsonl.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
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


def scan_demo(var: Path) -> int:
    """`make demo` with tracing on, then the scan: an in-process OTLP receiver writes every
    span the services and Envoy export to <var>/traces/traces.jsonl; the demo
    (deploy/local/demo.py) starts its own mesh in <var>/run with OTEL_EXPORTER_OTLP_ENDPOINT
    pointing at the receiver; once it has stopped (services flush their exporters on
    SIGTERM) every service log, Envoy's logs and the spans are scanned.
    Exit status: the demo's if it failed, else 1 if an identity number was found."""
    from deploy.local.otlp_sink import OtlpReceiver

    root = Path(__file__).resolve().parent.parent.parent
    shutil.rmtree(var, ignore_errors=True)
    (var / "traces").mkdir(parents=True)
    with open(var / "traces" / "traces.jsonl", "w") as out:
        receiver = OtlpReceiver(out).start()
        try:
            env = {
                **os.environ,
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
            }
            demo = subprocess.run(
                [sys.executable, "-m", "deploy.local.demo", "--var-dir", str(var / "run")],
                env=env,
                cwd=root,
            )
        finally:
            receiver.stop()
    if demo.returncode:
        print(f"the demo failed (exit {demo.returncode}); scanning anyway")
    found = main([str(var / "run" / "logs"), str(var / "traces")])
    return demo.returncode or found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument(
        "--demo", action="store_true", help="run the demo with tracing into PATH, then scan it"
    )
    args = parser.parse_args(argv)
    if args.demo:
        if len(args.paths) != 1:
            parser.error("--demo takes one directory")
        return scan_demo(args.paths[0])
    if not args.paths:
        parser.error("nothing to scan")
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
