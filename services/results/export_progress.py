"""Operators: the registries' bulk exports and how far they are, with progress bars.

    python -m services.results.export_progress            # follow until none is running
    python -m services.results.export_progress --once     # the state now, then exit
    python -m services.results.export_progress --export-id <id>

Reads the results database (`SAMHANDLING_RESULTS_DB_URL`, as the service) read-only: no
patient data and no identity number is shown, only the export, the registry, counts and
sizes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from sqlalchemy.engine import Engine

from services.common.db import service_engine
from services.results.adapters.export_repository import ExportRepository
from services.results.domain import export as ex


def _fields(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "export": str(job["export_id"])[:8],
        "registry": str(job["registry_name"] or job["client_id"])[:28],
        "status": job["status"],
        "patients": f"{job['total_patients']} patients, {job['excluded_patients']} left out",
        "size": f"{(job['bytes_written'] or 0) / 1e6:.1f} MB",
    }


def _total(job: dict[str, Any]) -> int:
    return max(int(job["total_results"] or 0), int(job["done_results"] or 0), 1)


def _done(job: dict[str, Any]) -> int:
    return _total(job) if job["status"] == ex.COMPLETE else int(job["done_results"] or 0)


def show(
    repo: ExportRepository,
    console: Console,
    export_id: str = "",
    limit: int = 20,
    once: bool = False,
    interval: float = 1.0,
) -> list[dict[str, Any]]:
    """Draws a bar per export (the `limit` newest, or one); follows them until none is
    queued or running unless `once`. Returns the jobs as last seen."""
    columns = (
        TextColumn("{task.fields[export]}"),
        TextColumn("{task.fields[registry]:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]:<9}"),
        TextColumn("{task.fields[patients]}"),
        TextColumn("{task.fields[size]}"),
    )
    tasks: dict[str, TaskID] = {}
    jobs: list[dict[str, Any]] = []
    with Progress(*columns, console=console, auto_refresh=False) as progress:
        while True:
            if export_id:
                one = repo.job(export_id)
                jobs = [one] if one is not None else []
            else:
                jobs = list(reversed(repo.jobs(limit)))
            for job in jobs:
                key = str(job["export_id"])
                if key not in tasks:
                    tasks[key] = progress.add_task("", total=_total(job), **_fields(job))
                progress.update(tasks[key], total=_total(job), completed=_done(job), **_fields(job))
            progress.refresh()
            if once or not any(j["status"] in ex.ACTIVE for j in jobs):
                break
            time.sleep(interval)
    if not jobs:
        console.print("no bulk exports" + (f" with id {export_id}" if export_id else ""))
    return jobs


def main(argv: Sequence[str] | None = None, engine: Engine | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export-id", default="", help="one export only")
    parser.add_argument("--limit", type=int, default=20, help="how many of the newest exports")
    parser.add_argument("--once", action="store_true", help="show the state now and exit")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between updates")
    args = parser.parse_args(argv)
    own = engine is None
    engine = engine or service_engine("results")
    try:
        show(
            ExportRepository(engine),
            Console(),
            export_id=args.export_id,
            limit=args.limit,
            once=args.once,
            interval=args.interval,
        )
    finally:
        if own:
            engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
