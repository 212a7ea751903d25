"""`python -m herdsman.router --control SOCKET --state FILE [--workers N]`: the router as its own
process; with N > 1 the parent of N workers (`router/workers.py`), each started as
`--worker --control ITS_SOCKET --parent PID`."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from herdsman.router.control import ControlServer, InProcess, Plane
from herdsman.router.proxy import Router


def main() -> None:
    parser = argparse.ArgumentParser(prog="herdsman.router", description=__doc__)
    parser.add_argument("--control", type=Path, required=True, help="the unix socket to be controlled on")
    parser.add_argument("--state", type=Path, help="routes and pools, kept across restarts")
    parser.add_argument("--workers", type=int, default=1, help="router processes sharing the listeners")
    parser.add_argument("--worker", action="store_true", help="one of the workers (no state file)")
    parser.add_argument("--parent", type=int, help="a worker's parent: the worker stops when it is gone")
    args = parser.parse_args()
    if not args.worker and args.state is None:
        parser.error("--state is required (but for a --worker)")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    plane: Plane
    if args.worker:
        plane = InProcess(Router(reuse_port=True))
    elif args.workers > 1:
        from herdsman.router.workers import WorkerSet

        plane = WorkerSet(args.workers, args.control)
    else:
        plane = InProcess(Router())
    state = None if args.worker else args.state
    asyncio.run(ControlServer(plane, args.control, state).serve(args.parent))


if __name__ == "__main__":
    main()
