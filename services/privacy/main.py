"""Runs the privacy service: `python -m services.privacy.main`."""

from __future__ import annotations

from services.common.server import serve
from services.privacy import bootstrap
from services.privacy.settings import Settings


def main() -> None:
    serve(bootstrap.build(Settings.from_env()))


if __name__ == "__main__":
    main()
