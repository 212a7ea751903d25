"""Serving the agent's API: on a unix socket (mode 0600) and, when asked, on 127.0.0.1:PORT.

uvicorn serves the FastAPI app on the agent's own event loop, from sockets made here, so the unix
socket has its mode before anyone can connect. uvicorn's signal capture is switched off: SIGINT
and SIGTERM belong to the agent, which stops the server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from herdsman.errors import HerdError


def token_path(home: Path, env: str) -> Path:
    return home / f"agent-{env}.token"


def socket_path(home: Path, env: str) -> Path:
    return home / "run" / f"agent-{env}.sock"


def ensure_token(home: Path, env: str) -> str:
    """The API token of ``env``: created once (0600), kept across agent restarts."""
    path = token_path(home, env)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the agent owns the signals
        yield


def _unix_socket(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return sock


def _tcp_socket(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port.isdigit():
        raise HerdError(
            f"the API can listen on a loopback address only, not {listen!r}",
            hint="e.g. --api 127.0.0.1:7070; put a proxy in front to reach it from elsewhere",
        )
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), int(port)))
    except OSError as exc:
        sock.close()
        raise HerdError(f"the API cannot listen on {listen}: {exc.strerror}") from None
    return sock


async def serve(app: FastAPI, unix: Path, listen: str | None = None) -> tuple[asyncio.Task[None], _Server]:
    """Start serving; returns the task and the server (set ``should_exit`` to stop it)."""
    sockets = [_unix_socket(unix)]
    if listen:
        sockets.append(_tcp_socket(listen))
    for sock in sockets:
        sock.listen(128)
        sock.setblocking(False)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=sockets))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # raise what stopped it
    return task, server
