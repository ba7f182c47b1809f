"""Runs the notifications service: `python -m services.notifications.main`."""

from __future__ import annotations

from services.common.server import serve
from services.notifications import bootstrap
from services.notifications.settings import Settings


def main() -> None:
    serve(bootstrap.build(Settings.from_env()))


if __name__ == "__main__":
    main()
