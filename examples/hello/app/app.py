"""hello: a tiny web app run by herdsman.

It reads its port from $PORT (herdsman gives every instance its own), answers /healthz for the
health check, and counts visits in a file on the `counter` volume (mounted at $DATA_DIR, /data by
default), so the count survives every deploy: the instance is disposable, the data is not.

Several instances (and each one's threads) share that volume, so an increment is a critical
section: an flock on `.visits.lock` in the volume makes read-add-write exact across instances, and
the new count is written under a temp name of its own (instance, process, thread) then renamed, so
a killed instance never leaves a half-written counter and no two writers share a temp file.
"""

import contextlib
import fcntl
import html
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(os.environ.get("DATA_DIR", "/data"))
COUNTER = DATA / "visits"
LOCK = DATA / ".visits.lock"
GREETING = os.environ.get("GREETING", "Hello")
RELEASE = os.environ.get("HERD_RELEASE", "dev")
INSTANCE = os.environ.get("HERD_INSTANCE", "local")


def read_visits() -> int:
    """The count, in the format migrate.py writes ({"visits": N, "schema": 2}) or the first one (N)."""
    try:
        text = COUNTER.read_text()
    except FileNotFoundError:
        return 0
    try:
        value = json.loads(text or "0")
    except ValueError:
        return 0
    return int(value["visits"]) if isinstance(value, dict) else int(value)


@contextlib.contextmanager
def counter_lock():
    """Exclusive use of the counter, across threads and instances (the kernel drops the lock of a
    killed holder, so a crash never leaves it stuck)."""
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def count_visit() -> int:
    """Add one visit and return the total: exact under concurrency, written atomically."""
    with counter_lock():
        visits = read_visits() + 1
        tmp = COUNTER.with_name(f".visits.{INSTANCE}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps({"visits": visits, "schema": 2}))
        os.replace(tmp, COUNTER)
    return visits


PROBE_AGENT = "herdsman-health"  # the User-Agent of herdsman's health probes
last_probe_status: list[int] = []  # the status of the previous probe: its line is logged on a change


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self.reply(200, "text/plain", "ok\n")
        elif self.path == "/":
            visits = count_visit()
            body = (
                f"<!doctype html><title>hello</title><h1>{html.escape(GREETING)}</h1>"
                f"<p>visit number <b id=visits>{visits}</b></p>"
                f"<p>served by instance <code>{html.escape(INSTANCE)}</code>"
                f" of release {html.escape(RELEASE)}</p>\n"
            )
            self.reply(200, "text/html; charset=utf-8", body)
        else:
            self.reply(404, "text/plain", "not found\n")

    def reply(self, status: int, content_type: str, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Herd-Release", RELEASE)
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """An access line per request, but a health probe's only when its answer changed: probes
        come every interval and would otherwise be nearly every line of the log."""
        if self.headers.get("User-Agent") == PROBE_AGENT:
            status = int(code) if isinstance(code, int) else 0
            if last_probe_status[-1:] == [status]:
                return
            last_probe_status[:] = [status]
        super().log_request(code, size)

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write(f"{self.address_string()} {format % args}\n")
        sys.stdout.flush()


class Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        """A client that went away mid-request (a router cutting a drained connection, a load
        generator stopping) is one line in the log, not a traceback that looks like a bug."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            sys.stdout.write(
                f"{client_address[0]} connection closed by the client ({type(error).__name__})\n"
            )
            sys.stdout.flush()
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    port = int(os.environ.get("PORT", "8000"))
    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop at once; data is written atomically
    print(f"hello listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
