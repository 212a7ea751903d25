"""The log stamper of a `.herd` home: ONE process stamps the output of every process instance.

Why one: a stamper per instance was a second Popen and a Python process (~10 ms of CPU, ~4 MB)
per start, a quarter of what a start costs in a burst. This one is started once, detached, by the
process driver (`stamping.py`, the driver's side) and run as `python -S -P THIS_FILE RUN_DIR`:
standard library only, imported by path, so it needs neither site-packages nor herdsman.

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
process. Control messages (one datagram each, answered `ok` or `error ...`): `ping`; `stop`;
`hand\\0ID\\0LOGPATH` with the FIFO's read fd attached.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import select
import signal
import socket
import sys
import time

PARTIAL_CAP = 64 * 1024  # a line longer than this is written in pieces
READ_SIZE = 64 * 1024
PROBE_EVERY = 5.0  # seconds: every FIFO is also read now and then (a safety net for a lost hang-up)
IDLE_EXIT = 30.0  # seconds with no FIFO and no caller, after which it exits (started again on demand)


def stamp(now: float) -> bytes:
    """The stamp of a line that arrived at ``now``: UTC to the microsecond, then a space."""
    micros = int(now % 1 * 1e6)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.{micros:06d}Z ".encode()


class Stream:
    """One instance's output on its way to its log file: complete lines stamped, a partial held."""

    def __init__(self, instance: str, fd: int, log: str) -> None:
        self.instance = instance
        self.fd = fd
        self.path = log
        self.log = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        self.partial = b""

    def feed(self, data: bytes, now: float) -> None:
        data = self.partial + data
        end = data.rfind(b"\n") + 1
        self.partial = data[end:]
        out = []
        if end:
            prefix = stamp(now)
            out = [prefix + line + b"\n" for line in data[: end - 1].split(b"\n")]
        while len(self.partial) >= PARTIAL_CAP:
            out.append(stamp(now) + self.partial[:PARTIAL_CAP] + b"\n")
            self.partial = self.partial[PARTIAL_CAP:]
        if out:
            _write_all(self.log, b"".join(out))

    def close(self, now: float) -> None:
        try:
            if self.partial:
                _write_all(self.log, stamp(now) + self.partial + b"\n")
                self.partial = b""
        finally:
            os.close(self.log)
            os.close(self.fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def open_fifo(path: str) -> int:
    """A FIFO's read end, opened so that the kernel reports its hang-up: a reader opened while the
    pipe already has writers is told of their end only after a writer opened *after* it (Linux
    counts writer opens), so one is opened and closed at once."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    return fd


class Stamper:
    def __init__(self, run: str, idle_exit: float = IDLE_EXIT) -> None:
        self.idle_exit = idle_exit
        self.run_dir = run
        self.pipes = os.path.join(run, "logpipes")
        self.sock_path = os.path.join(run, "stamper.sock")
        self.pid_path = os.path.join(run, "stamper.pid")
        self.index_path = os.path.join(self.pipes, ".index")  # "ID\0LOG\0" per FIFO handed over
        self.index_fd: int | None = None
        self.dead = 0  # entries of the index whose instance is gone
        self.poll = select.epoll()
        self.streams: dict[int, Stream] = {}  # by read fd
        self.by_id: dict[str, Stream] = {}
        self.conns: dict[int, socket.socket] = {}
        self.stopping = False
        os.makedirs(self.pipes, mode=0o700, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.setblocking(False)

    # streams ----------------------------------------------------------------------------------
    def adopt_all(self) -> None:
        """Every FIFO left under logpipes/ by a stamper that died, reopened and read: those in the
        index (handed over before); one not in it belongs to a start that hands it over itself."""
        entries = self.read_index()
        adopted = []
        for name in sorted(os.listdir(self.pipes)):
            log = entries.get(name)
            if name.startswith(".") or log is None:
                continue
            path = os.path.join(self.pipes, name)
            try:
                adopted.append((name, open_fifo(path), log))
            except OSError:
                _unlink(path)
        self.write_index({name: log for name, _fd, log in adopted})
        for name, fd, log in adopted:
            self.add(name, fd, log, remember=False)

    def read_index(self) -> dict[str, str]:
        try:
            with open(self.index_path, "rb") as index:
                parts = index.read().split(b"\0")
        except FileNotFoundError:
            return {}
        return {parts[i].decode(): os.fsdecode(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}

    def write_index(self, entries: dict[str, str]) -> None:
        """The index rewritten with ``entries`` only (at start, and once most entries are of gone
        instances)."""
        data = b"".join(name.encode() + b"\0" + os.fsencode(log) + b"\0" for name, log in entries.items())
        with open(self.index_path + ".new", "wb") as out:
            out.write(data)
        os.replace(self.index_path + ".new", self.index_path)
        if self.index_fd is not None:
            os.close(self.index_fd)
        self.index_fd = os.open(self.index_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.dead = 0

    def add(self, instance: str, fd: int, log: str, *, remember: bool = True) -> None:
        if instance in self.by_id:  # already adopted (a start raced with this stamper's own)
            os.close(fd)
            return
        os.set_blocking(fd, False)
        try:
            stream = Stream(instance, fd, log)
        except OSError:
            os.close(fd)
            raise
        self.streams[fd] = stream
        self.by_id[instance] = stream
        self.poll.register(fd, select.EPOLLIN | select.EPOLLHUP)
        if remember and self.index_fd is not None:  # before the ack: a handed-over FIFO is known
            _write_all(self.index_fd, instance.encode() + b"\0" + os.fsencode(log) + b"\0")
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
                print(f"stamper: {stream.path}: {exc}", file=sys.stderr, flush=True)
            if len(data) < READ_SIZE:
                return

    def finish(self, stream: Stream) -> None:
        self.poll.unregister(stream.fd)
        del self.streams[stream.fd]
        del self.by_id[stream.instance]
        try:
            stream.close(time.time())
        except OSError as exc:
            print(f"stamper: {stream.path}: {exc}", file=sys.stderr, flush=True)
        _unlink(os.path.join(self.pipes, stream.instance))
        self.dead += 1
        if self.dead > 1000 and self.dead > len(self.by_id):
            self.write_index({s.instance: s.path for s in self.by_id.values()})

    # control ----------------------------------------------------------------------------------
    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            self.conns[conn.fileno()] = conn
            self.poll.register(conn.fileno(), select.EPOLLIN)

    def serve(self, conn: socket.socket) -> None:
        try:
            message, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
        except BlockingIOError:
            return
        except OSError:
            message, fds = b"", []
        if not message:
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
                fd = fds.pop()
                self.add(parts[1].decode(), fd, os.fsdecode(parts[2]))
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
        self.adopt_all()
        _unlink(self.sock_path)
        old = os.umask(0o077)
        self.listener.bind(self.sock_path)
        os.umask(old)
        self.listener.listen(64)
        self.poll.register(self.listener.fileno(), select.EPOLLIN)
        with open(self.pid_path + ".new", "w") as out:
            out.write(str(os.getpid()))
        os.replace(self.pid_path + ".new", self.pid_path)
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write)  # SIGTERM ends the wait at once, not at the next probe
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        self.poll.register(wake_read, select.EPOLLIN)
        probed = busy = time.monotonic()
        listener = self.listener.fileno()
        while not self.stopping:
            try:
                events = self.poll.poll(min(PROBE_EVERY, self.idle_exit))
            except InterruptedError:
                continue
            for fd, _mask in events:
                if fd == listener:
                    self.accept()
                elif fd in self.conns:
                    self.serve(self.conns[fd])
                elif fd in self.streams:
                    self.drain(self.streams[fd])
                elif fd == wake_read:
                    with contextlib.suppress(OSError):
                        os.read(wake_read, 64)
            now = time.monotonic()
            if self.streams or self.conns or events:
                busy = now
            elif now - busy >= self.idle_exit:
                break  # nothing to stamp: a home whose instances all ended keeps no process
            if now - probed >= PROBE_EVERY:
                probed = now
                for stream in list(self.streams.values()):
                    self.drain(stream)
        self.shutdown()

    def shutdown(self) -> None:
        """Stop: what is in the pipes is read, partial lines written; FIFOs whose instances still
        run stay for the next stamper."""
        with contextlib.suppress(OSError, ValueError), open(self.pid_path) as pid:
            if int(pid.read()) == os.getpid():
                _unlink(self.pid_path)
                _unlink(self.sock_path)
        for stream in list(self.streams.values()):
            self.drain(stream)
        left = {s.instance: s.path for s in self.streams.values()}
        for stream in self.streams.values():
            with contextlib.suppress(OSError):
                stream.close(time.time())
        if left:
            self.write_index(left)  # the next stamper's
        else:
            _unlink(self.index_path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def main(argv: list[str]) -> int:
    """`THIS_FILE RUN_DIR [IDLE_EXIT]`: detach (the caller waits only for this first process), then serve."""
    if os.fork():  # the caller starts it in a session of its own; this child is never its zombie
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # two files per instance
    wanted = 1 << 16 if hard == resource.RLIM_INFINITY else min(hard, 1 << 16)
    if wanted > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    Stamper(argv[1], float(argv[2]) if len(argv) > 2 else IDLE_EXIT).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
