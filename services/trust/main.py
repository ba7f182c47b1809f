"""Runs the trust service: `python -m services.trust.main [serve|rotate-keys]`.

Settings: services/trust/settings.py (table in services/trust/README.md).
"""

from __future__ import annotations

import argparse

from services.common.server import serve
from services.trust import bootstrap
from services.trust.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description="The trust service (OAuth 2.0 / OIDC).")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "rotate-keys"])
    args = parser.parse_args()
    if args.command == "rotate-keys":
        print(bootstrap.build(Settings.from_env(), serving=False).keys.rotate())
        return
    serve(bootstrap.build(Settings.from_env()))


if __name__ == "__main__":
    main()
