"""What several benchmarks share: HAProxy in front of a peer's replicas, and the embedded router's
command line. (The scripts run as `python bench/NAME.py`, so this folder is on their path.)"""

from __future__ import annotations

import sys
from pathlib import Path

# HAProxy in front of a peer's replicas (Docker's or Swarm's own update), with retries and
# redispatch: the peer gets the same second chance at a refused request as herdsman's router.
HAPROXY_IN_FRONT = """
global
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
frontend web
    bind 127.0.0.1:{port}
    default_backend hello
backend hello
    option httpchk GET /healthz
{servers}
"""


def router_argv(control: Path, state: Path, workers: int = 1) -> list[str]:
    """The embedded router as herdsman starts it: a control socket, a state file, its workers."""
    argv = [sys.executable, "-m", "herdsman.router", "--control", str(control), "--state", str(state)]
    return argv + (["--workers", str(workers)] if workers > 1 else [])
