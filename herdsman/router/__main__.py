"""`python -m herdsman.router --control SOCKET --state FILE`: the router as its own process."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from herdsman.router.control import ControlServer
from herdsman.router.proxy import Router


def main() -> None:
    parser = argparse.ArgumentParser(prog="herdsman.router", description=__doc__)
    parser.add_argument("--control", type=Path, required=True, help="the unix socket to be controlled on")
    parser.add_argument("--state", type=Path, required=True, help="routes and pools, kept across restarts")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(ControlServer(Router(), args.control, args.state).serve())


if __name__ == "__main__":
    main()
