"""`make bench`: run every benchmark, print each table, write bench/results.json and the
figures section of bench/README.md (between the FIGURES markers), with the machine they
ran on. Each benchmark module has `run(quick: bool) -> list[dict]`.

    python -m bench.run [--quick] [--only ceiling,results_search]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import traceback
from pathlib import Path
from typing import Any

from tests.support.mesh_tls import use_test_ca

HERE = Path(__file__).resolve().parent
# Order matters: the ceiling first, so ratios in later rows use this run's ceiling.
SUITE = [
    "ceiling",
    "read_path",
    "trust_tokens",
    "results_ingest",
    "results_search",
    "masterdata_lookups",
    "privacy_decisions",
    "log_append",
    "log_verify",
    "documents_throughput",
    "notifications",
    "edge_security",
    "observability",
    "export",
]
BEGIN, END = "<!-- FIGURES:BEGIN -->", "<!-- FIGURES:END -->"


def machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)\n"
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    use_test_ca()  # a throw-away mesh CA: every hop is mutual TLS, as in production
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    chosen = [m for m in SUITE if not args.only or m in args.only.split(",")]
    results: dict[str, Any] = {"machine": machine(), "benchmarks": {}}
    previous = HERE / "results.json"
    if args.only and previous.exists():
        # A partial run keeps the other benchmarks' latest rows (their machine line is noted).
        kept = json.loads(previous.read_text()).get("benchmarks", {})
        results["benchmarks"] = {k: v for k, v in kept.items() if k not in chosen}
    for name in chosen:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            continue
        print(f"== {name}", flush=True)
        try:
            rows = module.run(quick=args.quick)
        except Exception:
            traceback.print_exc()
            rows = [{"error": "failed; see the console"}]
        results["benchmarks"][name] = rows
        print(table(rows), flush=True)
    (HERE / "results.json").write_text(json.dumps(results, indent=2))
    m = results["machine"]
    section = [
        BEGIN,
        f"Latest run: {m['date']} on {m['cores']} cores ({m['cpu']}), "
        f"Python {m['python']}, {m['system']}.",
        "",
    ]
    for name in [n for n in SUITE if n in results["benchmarks"]]:
        rows = results["benchmarks"][name]
        section += [f"### {name}", "", table(rows)]
    section.append(END)
    readme = HERE / "README.md"
    text = readme.read_text() if readme.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    readme.write_text(head + "\n".join(section) + tail)


if __name__ == "__main__":
    main()
