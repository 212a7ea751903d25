"""The log stamper of a `.herd` home: ONE process stamps the output of every process instance.

Why one: a stamper per instance was a second Popen and a Python process (~10 ms of CPU, ~4 MB)
per start, a quarter of what a start costs in a burst. This one is started once, detached, by the
process driver (`stamping.py`, the driver's side) and run as `python -S -P -c LAUNCH HERDSMAN_ROOT
RUN_DIR`: no site-packages, only the standard library and three small modules of herdsman
(`stamper_stream.py`, `procfs.py`), found by the root the driver gives.

Each instance writes its stdout and stderr into a FIFO, `RUN_DIR/logpipes/ID`. The driver hands
the FIFO's read end and the log file's path over the control socket (`RUN_DIR/stamper.sock`,
SOCK_SEQPACKET, SCM_RIGHTS); the stamper appends both names to `logpipes/.index` before it
answers. One epoll loop reads every FIFO, stamps each
line on arrival (`2026-12-03T14:06:21.123456Z text`, read by `logs.parse`) and appends it to the
log file. A line waits for its newline, up to PARTIAL_CAP bytes. At EOF (the instance and
everything holding its output are gone) the last unterminated line is written as a line, the log
closed and the FIFO removed. Started again after a crash, the stamper reopens every FIFO of its
index still under logpipes/: what the instances wrote meanwhile waited in the pipe.

With no FIFO to read and no caller for IDLE_EXIT seconds it exits: the next start starts it
again, and a home whose instances all ended without `herd down` (a crash, a test) keeps no
process.

Robustness: the stamper holds an exclusive flock on `RUN_DIR/stamper.run.lock` for its whole
life, taken before it adopts anything, so two stampers never read the same FIFOs or write the same
index (a second one waits there until the first has exited). Its pid file holds its pid AND its
start ticks, and is removed last. An error while handling one event (an index entry whose log
directory is gone, EMFILE on accept, a full disk) is written to stderr (`logs/stamper.log`) and
never ends the loop; an entry whose log cannot be opened is stamped into
`logs/orphaned/ID.log` (else read into nothing) so its instance never blocks.

What is lost: a SIGKILL loses only the partial line (up to PARTIAL_CAP bytes) held in memory, as
every read is written at once; the rest waits in the pipes for the next stamper. A shutdown (`stop`,
SIGTERM, idle exit) writes the partial line of a still-running instance as a line of its own: the
next stamper writes the rest of it as a second line.

Control messages (one datagram each, answered `ok` or `error ...`): `ping`; `stop`;
`hand\\0ID\\0LOGPATH` with the FIFO's read fd attached.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import select
import signal
import socket
import time

from herdsman.drivers import procfs
from herdsman.drivers.stamper_stream import (
    READ_SIZE,
    Stream,
    open_fifo,
    report,
    unlink,
    write_all,
)

PROBE_EVERY = 5.0  # seconds: every FIFO is also read now and then (a safety net for a lost hang-up)
IDLE_EXIT = 30.0  # seconds with no FIFO and no caller, after which it exits (started again on demand)


class Stamper:
    def __init__(self, run: str, idle_exit: float = IDLE_EXIT) -> None:
        self.idle_exit = idle_exit
        self.run_dir = run
        self.pipes = os.path.join(run, "logpipes")
        self.sock_path = os.path.join(run, "stamper.sock")
        self.pid_path = os.path.join(run, "stamper.pid")
        self.run_lock_path = os.path.join(run, "stamper.run.lock")
        self.orphaned = os.path.join(os.path.dirname(os.path.abspath(run)), "logs", "orphaned")
        self.index_path = os.path.join(self.pipes, ".index")  # "ID\0LOG\0" per FIFO handed over
        self.index_fd: int | None = None
        self.dead = 0  # entries of the index whose instance is gone
        self.poll = select.epoll()
        self.streams: dict[int, Stream] = {}  # by read fd
        self.by_node: dict[tuple[int, int], Stream] = {}
        self.conns: dict[int, socket.socket] = {}
        self.stopping = False
        os.makedirs(self.pipes, mode=0o700, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.setblocking(False)

    # streams ----------------------------------------------------------------------------------
    def adopt_all(self) -> None:
        """Every FIFO left under logpipes/ by a stamper that died, reopened and read: those in the
        index (handed over before); one not in it belongs to a start that hands it over itself.
        Each entry on its own: one that fails (its log directory removed, the project moved) is
        reported and read into a fallback log, never the end of the stamper."""
        entries = self.read_index()
        adopted = []
        for name in sorted(os.listdir(self.pipes)):
            log = entries.get(name)
            if name.startswith(".") or log is None:
                continue
            path = os.path.join(self.pipes, name)
            try:
                adopted.append((name, open_fifo(path), log))
            except OSError as exc:
                report(f"{path}: {exc}")
                unlink(path)
        try:
            self.write_index({name: log for name, _fd, log in adopted})
        except OSError as exc:
            report(f"{self.index_path}: {exc}")
        for name, fd, log in adopted:
            try:
                self.add(name, fd, log, remember=False)
            except OSError as exc:
                report(f"{name}: {log}: {exc}; its output goes to {self.orphaned}")
                self.add_orphan(name, fd)

    def add_orphan(self, name: str, fd: int) -> None:
        """An adopted FIFO whose log cannot be opened: stamped into logs/orphaned/NAME.log, else
        read into /dev/null (an unread pipe would block its instance)."""
        for log in (os.path.join(self.orphaned, name + ".log"), os.devnull):
            try:
                os.makedirs(os.path.dirname(log), exist_ok=True)
                self.add(name, fd, log, remember=False)
                return
            except OSError as exc:
                report(f"{log}: {exc}")
        os.close(fd)

    def read_index(self) -> dict[str, str]:
        try:
            with open(self.index_path, "rb") as index:
                parts = index.read().split(b"\0")
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                report(f"{self.index_path}: {exc}")
            return {}
        return {os.fsdecode(parts[i]): os.fsdecode(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}

    def write_index(self, entries: dict[str, str]) -> None:
        """The index rewritten with ``entries`` only (at start, and once most entries are of gone
        instances)."""
        data = b"".join(os.fsencode(name) + b"\0" + os.fsencode(log) + b"\0" for name, log in entries.items())
        with open(self.index_path + ".new", "wb") as out:
            out.write(data)
        os.replace(self.index_path + ".new", self.index_path)
        if self.index_fd is not None:
            os.close(self.index_fd)
        self.index_fd = os.open(self.index_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.dead = 0

    def add(self, instance: str, fd: int, log: str, *, remember: bool = True) -> None:
        """Read ``fd`` (the FIFO of ``instance``) into ``log``. Raises OSError with ``fd`` still
        open when the log cannot be opened."""
        os.set_blocking(fd, False)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in self.by_node:  # this very FIFO is read already (a start raced
            os.close(fd)  # with this stamper's adoption); a reused id has a new FIFO, read too
            return
        stream = Stream(instance, fd, log)
        try:
            self.poll.register(fd, select.EPOLLIN | select.EPOLLHUP)
        except OSError:
            os.close(stream.log)  # nothing kept: the caller still owns ``fd``
            raise
        self.streams[fd] = stream
        self.by_node[stream.node] = stream
        if remember and self.index_fd is not None:  # before the ack: a handed-over FIFO is known
            write_all(self.index_fd, os.fsencode(instance) + b"\0" + os.fsencode(log) + b"\0")
        self.drain(stream)  # what waited in the pipe, or the EOF of an instance that is gone

    def drain(self, stream: Stream) -> None:
        """Read what is there (up to a few reads, so one loud instance cannot starve the rest)."""
        for _ in range(4):
            try:
                data = os.read(stream.fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.finish(stream)
                return
            try:
                stream.feed(data, time.time())
            except OSError as exc:  # the log cannot be written (a full disk): the instance must not block
                report(f"{stream.path}: {exc}")
            if len(data) < READ_SIZE:
                return

    def finish(self, stream: Stream) -> None:
        with contextlib.suppress(OSError):
            self.poll.unregister(stream.fd)
        del self.streams[stream.fd]
        del self.by_node[stream.node]
        try:
            stream.close(time.time())
        except OSError as exc:
            report(f"{stream.path}: {exc}")
        path = os.path.join(self.pipes, stream.instance)
        try:  # only the FIFO this stream read: a reused id may have a new one there already
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == stream.node:
                unlink(path)
        except OSError:
            pass
        self.dead += 1
        if self.dead > 1000 and self.dead > len(self.by_node):
            try:
                self.write_index({s.instance: s.path for s in self.by_node.values()})
            except OSError as exc:
                report(f"{self.index_path}: {exc}")

    # control ----------------------------------------------------------------------------------
    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # EMFILE, ECONNABORTED: this caller's reset -> ensure path runs
                report(f"accept: {exc}")
                return
            if self.stopping:  # closed without a reply: the caller starts the next stamper
                conn.close()
                continue
            try:
                conn.setblocking(False)
                self.poll.register(conn.fileno(), select.EPOLLIN)
            except OSError as exc:
                report(f"accept: {exc}")
                conn.close()
                continue
            self.conns[conn.fileno()] = conn

    def serve(self, conn: socket.socket) -> None:
        try:
            message, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
        except BlockingIOError:
            return
        except OSError:
            message, fds = b"", []
        if not message:
            with contextlib.suppress(OSError):
                self.poll.unregister(conn.fileno())
            del self.conns[conn.fileno()]
            conn.close()
            for fd in fds:
                os.close(fd)
            return
        parts = message.split(b"\0")
        try:
            if parts[0] == b"ping":
                reply = b"ok"
            elif parts[0] == b"stop":
                self.stopping = True
                reply = b"ok"
            elif parts[0] == b"hand" and len(parts) == 3 and len(fds) == 1:
                self.add(os.fsdecode(parts[1]), fds[0], os.fsdecode(parts[2]))
                fds.pop()  # read now (or closed as a duplicate): no longer ours to close
                reply = b"ok"
            else:
                reply = b"error unknown request"
        except (OSError, ValueError) as exc:  # a log that cannot be opened, a name that is not UTF-8
            reply = f"error {exc}".encode()
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(OSError):
            conn.send(reply)

    # loop -------------------------------------------------------------------------------------
    def run(self) -> None:
        run_lock = os.open(self.run_lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(run_lock, fcntl.LOCK_EX)  # held until the process ends: one stamper at a time
        self.adopt_all()
        unlink(self.sock_path)
        old = os.umask(0o077)
        self.listener.bind(self.sock_path)
        os.umask(old)
        self.listener.listen(64)
        self.poll.register(self.listener.fileno(), select.EPOLLIN)
        with open(self.pid_path + ".new", "w") as out:
            out.write(f"{os.getpid()} {procfs.start_ticks(os.getpid())}")
        os.replace(self.pid_path + ".new", self.pid_path)
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write)  # SIGTERM ends the wait at once, not at the next probe
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        self.poll.register(wake_read, select.EPOLLIN)
        probed = busy = time.monotonic()
        while not self.stopping:
            try:
                events = self.poll.poll(min(PROBE_EVERY, self.idle_exit))
            except InterruptedError:
                continue
            for fd, _mask in events:
                try:
                    self.handle(fd, wake_read)
                except OSError as exc:  # one event's failure, never the end of the loop
                    report(f"fd {fd}: {exc}")
            now = time.monotonic()
            if self.streams or self.conns or events:
                busy = now
            elif now - busy >= self.idle_exit:
                break  # nothing to stamp: a home whose instances all ended keeps no process
            if now - probed >= PROBE_EVERY:
                probed = now
                for stream in list(self.streams.values()):
                    try:
                        self.drain(stream)
                    except OSError as exc:
                        report(f"{stream.path}: {exc}")
        self.shutdown()

    def handle(self, fd: int, wake_read: int) -> None:
        if fd == self.listener.fileno():
            self.accept()
        elif fd in self.conns:
            self.serve(self.conns[fd])
        elif fd in self.streams:
            self.drain(self.streams[fd])
        elif fd == wake_read:
            with contextlib.suppress(OSError):
                os.read(wake_read, 64)

    def shutdown(self) -> None:
        """Stop: callers are refused (they start the next stamper, which waits for the run lock),
        what is in the pipes is read, partial lines written; FIFOs whose instances still run stay
        for the next stamper. The pid file goes last: while it names this process, it runs."""
        self.stopping = True
        with contextlib.suppress(OSError):
            self.listener.close()  # connections not yet accepted are reset
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()
        mine = _read_pid(self.pid_path) == os.getpid()
        if mine:
            unlink(self.sock_path)
        for stream in list(self.streams.values()):
            try:
                self.drain(stream)
            except OSError as exc:
                report(f"{stream.path}: {exc}")
        left = {s.instance: s.path for s in self.streams.values()}
        for stream in self.streams.values():
            with contextlib.suppress(OSError):
                stream.close(time.time())
        try:
            if left:
                self.write_index(left)  # the next stamper's
            else:
                unlink(self.index_path)
        except OSError as exc:
            report(f"{self.index_path}: {exc}")
        if mine:
            unlink(self.pid_path)


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as pid:
            return int(pid.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str]) -> int:
    """``argv``: (unused, RUN_DIR, [IDLE_EXIT]). Detach (the caller waits only for this first
    process), then serve."""
    if os.fork():  # the caller starts it in a session of its own; this child is never its zombie
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # two files per instance
    wanted = 1 << 16 if hard == resource.RLIM_INFINITY else min(hard, 1 << 16)
    if wanted > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    Stamper(argv[1], float(argv[2]) if len(argv) > 2 else IDLE_EXIT).run()
    return 0


# how the driver starts it: `python -S -P -c LAUNCH HERDSMAN_ROOT RUN_DIR IDLE_EXIT`
LAUNCH = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from herdsman.drivers.stamper import main; sys.exit(main(sys.argv[1:]))"
)
