"""Operators: webhook delivery progress, one progress bar per webhook subscription.

    python -m services.notifications.progress [--watch SECONDS] [--all]

Reads the notifications service's own database (SAMHANDLING_NOTIFICATIONS_DB_URL, as the
service does; in Kubernetes: `kubectl -n samhandling exec deploy/notifications -- python -m
services.notifications.progress --watch 2`). Per subscription: delivered of made, pending,
parked (given up after the retries; back with RetryParkedNotifications), status and the
last error. Shows ids and client ids only, never whom a subscription is for. `--all` also
lists subscriptions with nothing left to deliver.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from sqlalchemy.engine import Engine

from services.common.db import service_engine
from services.notifications.adapters import orm
from services.notifications.adapters.repository import PARKED, PENDING


def webhook_progress(engine: Engine) -> list[dict[str, Any]]:
    s, n = orm.subscriptions, orm.notifications
    counts = (
        sa.select(
            n.c.subscription_id,
            sa.func.sum(sa.case((n.c.delivery == PENDING, 1), else_=0)).label("pending"),
            sa.func.sum(sa.case((n.c.delivery == PARKED, 1), else_=0)).label("parked"),
        )
        .group_by(n.c.subscription_id)
        .subquery()
    )
    query = (
        sa.select(
            s.c.subscription_id,
            s.c.client_id,
            s.c.topic,
            s.c.status,
            s.c.event_count,
            s.c.delivered_count,
            s.c.last_error,
            sa.func.coalesce(counts.c.pending, 0).label("pending"),
            sa.func.coalesce(counts.c.parked, 0).label("parked"),
        )
        .outerjoin(counts, counts.c.subscription_id == s.c.subscription_id)
        .where(s.c.channel == "REST_HOOK")
        .order_by(s.c.create_time)
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def render(rows: list[dict[str, Any]], console: Console, show_all: bool) -> None:
    shown = [r for r in rows if show_all or r["pending"] or r["parked"]]
    if not shown:
        console.print("every webhook notification is delivered")
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"),
        console=console,
        auto_refresh=False,
    ) as progress:
        for r in shown:
            extra = f"pending {r['pending']}, parked {r['parked']}, {r['status'].lower()}"
            if r["last_error"]:
                extra += f" ({r['last_error']})"
            progress.add_task(
                f"{r['subscription_id'][:8]} {r['client_id']} {r['topic'].lower()}",
                total=max(int(r["event_count"]), 1),
                completed=int(r["delivered_count"]),
                extra=extra,
            )
        progress.refresh()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watch", type=float, default=0.0, help="refresh every N seconds")
    parser.add_argument("--all", action="store_true", help="also subscriptions with no backlog")
    args = parser.parse_args()
    engine = service_engine("notifications")
    console = Console()
    while True:
        render(webhook_progress(engine), console, args.all)
        if not args.watch:
            return
        time.sleep(args.watch)
        console.clear()


if __name__ == "__main__":
    main()
