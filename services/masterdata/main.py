"""The master data service's process: `python -m services.masterdata.main`."""

from __future__ import annotations

from services.common.server import serve
from services.masterdata import bootstrap
from services.masterdata.settings import Settings


def main() -> None:
    serve(bootstrap.build(Settings.from_env()))


if __name__ == "__main__":
    main()
