"""The process driver's side of the shared log stamper (`stamper.py`): FIFOs, hand-off, start, stop.

An instance's stdout and stderr are a FIFO, `.herd/run/logpipes/ID` (mode 0600). The driver
opens the FIFO for reading first (so nothing written is lost), then read-write for the instance:
an instance that holds its output FIFO read-write is a reader itself, so its writes never meet
EPIPE or SIGPIPE, even while no stamper runs. At worst they block once the pipe is full (the
kernel's default, 64 KiB: not enlarged, as 1 MiB pipes exhaust a non-root user's pipe quota,
pipe-user-pages-soft, after ~63 instances, and the kernel then gives that user's new pipes 8 KiB).
After the start the read end goes to the
stamper over its socket (SCM_RIGHTS) with the log file's path, which the stamper adds to its index
(`logpipes/.index`) before it answers. The FIFO is the one file a start creates here: creating a
file costs ~1 ms of CPU on this machine's ext4, so no symlink beside it names the log file.

The stamper is started on demand (like the router: ask, else start and wait for its socket) and
stopped by `herd down` once no instance of the home is left (`release_stamper`). Between starts
the driver's listing (the agent's every pass) calls `revive`: FIFOs under logpipes/ and no live
stamper (a pid check, no socket round trip) start one again, so a crashed stamper is not left
down until the next start. Its pid file holds "PID TICKS": a reused pid is not it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from herdsman.drivers import procfs, stamper
from herdsman.errors import DriverError

REVIVE_AGAIN = 60.0  # seconds before a listing tries again to start a stamper that would not start
START_WAIT = 30.0  # seconds for a new stamper to answer on a loaded machine
CALL_TIMEOUT = 10.0


class Stamping:
    def __init__(self, home: Path) -> None:
        run = home / "run"
        self.run = run
        self.pipes = run / "logpipes"
        self.socket_path = run / "stamper.sock"
        self.pid_file = run / "stamper.pid"
        self.lock_file = run / "stamper.lock"
        self.log = home / "logs" / "stamper.log"
        self.records = run / "instances"
        self._start_lock = threading.Lock()
        self._revive_failed = 0.0  # monotonic time of the last failed revive (retried after REVIVE_AGAIN)
        self.idle_exit = stamper.IDLE_EXIT  # what a stamper this starts waits idle before it exits

    # an instance's output ---------------------------------------------------------------------
    def open(self, instance_id: str, log: Path) -> tuple[int, int]:
        """The FIFO of a new instance: (its read end, for the stamper; its read-write end, for the
        instance's stdout and stderr)."""
        self.pipes.mkdir(mode=0o700, parents=True, exist_ok=True)
        fifo = self.pipes / instance_id
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo, 0o600)
        read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        write_end = os.open(fifo, os.O_RDWR)
        return read_end, write_end

    def discard(self, instance_id: str) -> None:
        """The FIFO of an instance that did not start."""
        (self.pipes / instance_id).unlink(missing_ok=True)

    def hand(self, instance_id: str, read_end: int, log: Path) -> None:
        """Give the stamper the read end of the instance's FIFO (starting the stamper if needed)."""
        message = b"\0".join((b"hand", instance_id.encode(), os.fsencode(log.absolute())))
        try:
            reply = self._call(message, [read_end])
        except OSError:
            self.ensure()  # raises DriverError, never OSError: the caller then ends the child
            try:
                reply = self._call(message, [read_end])
            except OSError as exc:
                raise DriverError(f"the log stamper does not answer: {exc}", hint=f"see {self.log}") from exc
        if reply != b"ok":
            raise DriverError(f"the log stamper refused {instance_id}: {reply.decode(errors='replace')}")

    def settle(self, instance_id: str, seconds: float) -> None:
        """Wait up to ``seconds`` for the stamper to have written all of a gone instance's output
        (it removes the FIFO at EOF); at once when no stamper runs."""
        fifo = self.pipes / instance_id
        deadline = time.monotonic() + seconds
        while fifo.exists() and time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.01)

    # the stamper process ----------------------------------------------------------------------
    def running(self) -> tuple[int, int] | None:
        """The running stamper's (pid, start ticks), from its pid file and /proc."""
        try:
            pid_text, ticks_text = self.pid_file.read_text().split()
            pid, ticks = int(pid_text), int(ticks_text)
        except (OSError, ValueError):
            return None
        return (pid, ticks) if procfs.alive(pid, ticks) else None

    def pid(self) -> int | None:
        """The running stamper's pid (a reused pid is not it)."""
        found = self.running()
        return found[0] if found else None

    def ping(self) -> bool:
        try:
            return self._call(b"ping") == b"ok"
        except OSError:
            return False

    def revive(self) -> None:
        """Cheap, for every listing: start the stamper again when FIFOs wait under logpipes/ and
        none runs (a pid check; no socket round trip while its process lives). A stamper that
        would not start is tried again after REVIVE_AGAIN seconds, reported on stamper.log."""
        if self.running() is not None or time.monotonic() - self._revive_failed < REVIVE_AGAIN:
            return
        try:
            with os.scandir(self.pipes) as entries:
                if not any(not entry.name.startswith(".") for entry in entries):
                    return
        except OSError:
            return
        try:
            self.ensure()
        except DriverError:
            self._revive_failed = time.monotonic()

    def ensure(self) -> None:
        """The stamper of this home, started (detached) if it does not answer. Any OSError (the
        lock, a directory, Popen) is a DriverError."""
        try:
            self._ensure()
        except OSError as exc:
            raise DriverError(
                f"cannot start the log stamper: {exc}",
                hint=f"check {self.run} (disk space, processes); see {self.log}",
            ) from exc

    def _ensure(self) -> None:
        with self._start_lock:
            self.run.mkdir(parents=True, exist_ok=True)
            with self.lock_file.open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if self.ping():
                    return
                stale = self.running()
                if stale is not None:  # alive but not answering: shutting down, or hung
                    self._wait_gone(*stale, 5.0)
                self._start()

    def _wait_gone(self, pid: int, ticks: int, wait: float) -> None:
        """Wait up to ``wait`` seconds for the stamper to end, then SIGKILL it (one reader per FIFO)."""
        deadline = time.monotonic() + wait
        while procfs.alive(pid, ticks) and time.monotonic() < deadline:
            time.sleep(0.02)
        if procfs.alive(pid, ticks):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + wait
            while procfs.alive(pid, ticks) and time.monotonic() < deadline:
                time.sleep(0.02)

    def _start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        argv = launch_argv(self.run, self.idle_exit)
        with self.log.open("ab") as out:
            first = subprocess.Popen(
                argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
            )
        try:
            first.wait(timeout=START_WAIT)  # it forks the stamper and exits at once
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if self.ping():
                return
            time.sleep(0.02)
        raise DriverError(f"the log stamper did not come up within {START_WAIT:g}s", hint=f"see {self.log}")

    def stop(self, wait: float = 5.0) -> bool:
        """Stop the stamper (it writes what is in the pipes first) and wait for its process to end;
        SIGKILL after ``wait`` seconds. Says whether one ran."""
        found = self.running()
        if found is None:  # none, or one of an older version (its pid file holds no ticks)
            with contextlib.suppress(OSError):
                return self._call(b"stop", timeout=2.0) == b"ok"
            return False
        pid, ticks = found
        try:
            self._call(b"stop", timeout=2.0)
        except OSError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self._wait_gone(pid, ticks, wait)
        return True

    def _call(self, message: bytes, fds: list[int] | None = None, timeout: float = CALL_TIMEOUT) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.socket_path))
            if fds:
                socket.send_fds(sock, [message], fds)
            else:
                sock.send(message)
            reply = sock.recv(4096)
            if not reply:  # it closed without an answer (it was exiting): as if it did not run
                raise ConnectionResetError("the log stamper closed the connection")
            return reply


def release_stamper(home: Path) -> bool:
    """`herd down`: the home's stamper stops once no process instance of any environment is left
    (instances of others keep theirs). Says whether one was stopped."""
    stamping = Stamping(home)
    if any(stamping.records.glob("*.json")):
        return False
    return stamping.stop()


def launch_argv(run: Path, idle_exit: float) -> list[str]:
    """How a stamper for ``run`` is started: no site-packages (-S), herdsman found by its root."""
    root = str(Path(stamper.__file__).resolve().parent.parent.parent)
    return [sys.executable, "-S", "-P", "-c", stamper.LAUNCH, root, str(run.absolute()), str(idle_exit)]
