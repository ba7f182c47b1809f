"""Runs the results service: `python -m services.results.main`."""

from __future__ import annotations

from services.common.server import serve
from services.results import bootstrap
from services.results.settings import Settings


def main() -> None:
    serve(bootstrap.build(Settings.from_env()))


if __name__ == "__main__":
    main()
