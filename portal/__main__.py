"""`python -m portal`: serve the citizen portal (uvicorn) on SAMHANDLING_PORTAL_URL's port."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

import uvicorn

from portal.app import create_app
from portal.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default=None, help="default: the host of SAMHANDLING_PORTAL_URL")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"portal: {exc}", file=sys.stderr)
        return 2
    public = urlsplit(settings.public_url)
    uvicorn.run(
        create_app(settings),
        host=args.host or public.hostname or "127.0.0.1",
        port=args.port or public.port or (443 if public.scheme == "https" else 80),
        log_level="warning",
        access_log=False,  # the edge logs the API calls; the portal's URLs carry no identities
        server_header=False,
        proxy_headers=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
