"""Runs the documents service: `python -m services.documents.main`."""

from __future__ import annotations

from services.common.server import serve
from services.documents import bootstrap
from services.documents.settings import Settings


def main() -> None:
    serve(bootstrap.build(Settings.from_env()))


if __name__ == "__main__":
    main()
