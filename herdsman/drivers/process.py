"""The `process` driver, the embedded default: instances are detached processes on this machine.

Each instance runs from its image unpacked once, read-only, in `.herd/rootfs/DIGEST`, inside
bubblewrap when it is installed (see `sandbox.py`). It is started in a session of its own with
stdout and stderr going into a FIFO read by the home's one log stamper (`stamping.py`), so it
outlives the agent and its output does not pass through the agent. Its labels, pid and port are
kept in `.herd/run/instances/ID.json`: `list()` rebuilds the actual state from those records and
/proc alone, which is how a new agent adopts what an old one started. A pid is trusted only
together with its start time, so a reused pid is never mistaken for a live instance.

`verify` compares an instance with what its release says: the unpacked image against the file
list recorded at unpack, and the command and environment it was *started with* (kept in its
record, secret values as digests) against the release's. Not /proc/PID/environ: a wrapper that
execs (a pyenv shim, a shell script) legitimately changes the process's own view of both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from herdsman.drivers import procfs
from herdsman.drivers.base import (
    BlockingDriver,
    Drift,
    Drifts,
    ExecResult,
    InstanceSpec,
    InstanceState,
    States,
    is_host_image,
    launch_drifts,
    private_dir,
    secret_digest,
    stack_key,
)
from herdsman.drivers.bounded import run_bounded
from herdsman.drivers.children import Children
from herdsman.drivers.process_exec import entry_from_proc, exec_env
from herdsman.drivers.records import RecordFiles
from herdsman.drivers.sandbox import Launch, bwrap_launch, host_layout, plain_launch
from herdsman.drivers.stamping import Stamping
from herdsman.errors import DriverError
from herdsman.image import filelist
from herdsman.image.filelist import Difference
from herdsman.image.oci import ImageStore
from herdsman.image.unpack import unpack_image
from herdsman.logs import write_labels
from herdsman.spec.models import Environment

PORTS_FRESH = 1.0  # seconds the ports read from the instance records are trusted
LAYOUT_FRESH = 5.0  # seconds the host's directory layout (for the sandbox's binds) is trusted
Records = list[dict[str, Any]]
Differences = list[Difference]


class ProcessDriver(BlockingDriver):
    name = "process"

    def __init__(self, home: Path, store: ImageStore, *, sandbox: str = "auto") -> None:
        self.home = home
        self.store = store
        self.records = home / "run" / "instances"
        self.record_files = RecordFiles(self.records)
        self.rootfs = home / "rootfs"
        self.logs = home / "logs"
        self.scratch = home / "run" / "scratch"
        private_dir(home / "run")
        private_dir(self.records)
        self.key = stack_key(home)
        if sandbox not in ("auto", "bwrap", "none"):
            raise DriverError(f"unknown sandbox {sandbox!r}", hint="use auto, bwrap or none")
        self.bwrap = shutil.which("bwrap") if sandbox != "none" else None
        if sandbox == "bwrap" and self.bwrap is None:
            raise DriverError("bubblewrap is not installed", hint="apt-get install bubblewrap")
        self.children = Children()
        self.stamping = Stamping(home)
        self._checked: dict[Path, tuple[float, Differences]] = {}
        self._ports_given: set[int] = set()
        self._ports_read: tuple[float, set[int]] | None = None  # (when, ports in the records)
        self._layout: tuple[float, list[tuple[str, str]]] | None = None  # (when, host_layout())

    @classmethod
    def from_environment(
        cls, home: Path, store: ImageStore, environment: Environment | None
    ) -> ProcessDriver:
        """The process driver has no settings of its own."""
        return cls(home, store)

    # protocol ---------------------------------------------------------------------------------
    async def inspect(self, instance_id: str) -> InstanceState | None:
        record = self._load(instance_id)
        return self._state(record) if record else None

    def log_file(self, instance_id: str) -> Path | None:
        record = self._load(instance_id)
        return Path(record["log"]) if record else None

    def settle_logs(self, instance_id: str) -> None:
        """An instance that is gone: wait (briefly) for the stamper to write its last lines."""
        record = self._load(instance_id)
        if record is None or not self.children.running(int(record["pid"]), record.get("ticks")):
            self.stamping.settle(instance_id, 3)

    def volume_dir(self, stack: str, name: str) -> Path:
        """Where volume ``name`` keeps its data (instances bind it read-write)."""
        path = self.home / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remove_volume(self, stack: str, name: str) -> None:
        shutil.rmtree(self.home / "volumes" / name, ignore_errors=True)

    # starting ---------------------------------------------------------------------------------
    def rootfs_of(self, image: str) -> Path:
        path = self.rootfs / image.removeprefix("sha256:")
        if not path.exists():
            unpack_image(self.store, image, path)
        return path

    def _is_host_image(self, image: str) -> bool:
        return is_host_image(self.store.manifest(image))

    def _start(self, spec: InstanceSpec) -> InstanceState:
        if self._load(spec.id) is not None:
            raise DriverError(f"instance {spec.id} already exists")
        rootfs = self.rootfs_of(spec.image)
        host_image = self._is_host_image(spec.image)
        port = self._free_port() if spec.wants_port else None
        scratch = self.scratch / spec.id
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True, mode=0o700)
        launch = self._launch(spec, port, rootfs, host_image, scratch)
        for volume in spec.volumes:
            volume.source.mkdir(parents=True, exist_ok=True)
        service = spec.labels.get("herd.service", "instance")
        log = spec.log_file or self.logs / service / f"{spec.id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        write_labels(log, dict(spec.labels))
        read_end, output = self.stamping.open(spec.id, log)
        try:
            child = subprocess.Popen(
                launch.argv,
                env=launch.env,
                cwd=launch.cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(read_end)
            self.stamping.discard(spec.id)
            raise DriverError(
                f"cannot start {spec.argv[0]!r}: {exc.strerror}", hint="check `command`"
            ) from exc
        finally:
            os.close(output)
        try:
            self.stamping.hand(spec.id, read_end, log)
        except DriverError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            self.stamping.discard(spec.id)
            raise
        finally:
            os.close(read_end)
        self.children.add(child)
        record: dict[str, Any] = {
            "id": spec.id,
            "labels": dict(spec.labels),
            "image": spec.image,
            "pid": child.pid,
            "ticks": procfs.start_ticks(child.pid),
            "port": port,
            "started": time.time(),
            "sandboxed": bool(self.bwrap),
            "log": str(log),
            "argv": list(spec.argv),
            "env": _hidden(launch.env, spec.secrets, self.key),  # what it was started with, for `herd verify`
            "secrets": list(spec.secrets),
            "stop_grace": spec.stop_grace,
            # how `exec` enters it: the sandbox's argv up to its command ("--"), or the plain cwd
            "exec": {
                "sandbox": launch.argv[: len(launch.argv) - len(spec.argv)] if self.bwrap else None,
                "cwd": launch.cwd,
            },
        }
        self.record_files.write(record)
        return self._state(record)

    def _launch(
        self, spec: InstanceSpec, port: int | None, rootfs: Path, host_image: bool, scratch: Path
    ) -> Launch:
        """How the instance is started: argv, environment, working directory (pure but for
        looking at the host's layout), so `verify` can compute what a running instance should run."""
        env = dict(spec.env)
        if port is not None:
            env["PORT"] = str(port)
        if host_image:
            env["PATH"] = ":".join(
                dict.fromkeys(p for p in (env.get("PATH", ""), os.environ.get("PATH", "")) if p)
            )
        if self.bwrap:
            now = time.monotonic()
            if self._layout is None or now - self._layout[0] >= LAYOUT_FRESH:
                self._layout = (now, host_layout())  # a few stats each: not at each of a burst's starts
            layout = self._layout[1]
            return bwrap_launch(
                self.bwrap, spec, rootfs, host_image=host_image, env=env, layout=layout, scratch=scratch
            )
        if host_image:
            return plain_launch(spec, rootfs, env=env, scratch=scratch)
        raise DriverError(
            f"image {spec.image[:19]} is a full root file system and needs bubblewrap to run",
            hint='apt-get install bubblewrap, or use base = "host"',
        )

    def _free_port(self) -> int:
        taken = self._recorded_ports() | self._ports_given
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in taken:
                self._ports_given.add(port)
                return port
        raise DriverError("no free port on 127.0.0.1")

    def _recorded_ports(self) -> set[int]:
        """The ports in the instance records, read again at most every PORTS_FRESH seconds: a
        burst of a thousand starts must not read every record for each. Ports this driver gave
        are in ``_ports_given`` at once; what this misses is a port another process gave in the
        last second whose instance does not listen yet, and bind() to port 0 picking that very
        one (processes start instances in turn, under the deploy lock)."""
        now = time.monotonic()
        if self._ports_read is None or now - self._ports_read[0] >= PORTS_FRESH:
            ports = {int(r["port"]) for r in self._records() if r.get("port")}
            self._ports_read = (now, ports)
        return self._ports_read[1]

    # state ------------------------------------------------------------------------------------
    def list_now(self, labels: Mapping[str, str] | None = None) -> States:
        self.stamping.revive()  # a crashed stamper started again (cheap: a pid check)
        wanted = dict(labels or {})
        states = []
        for record in self._records():
            if all(record["labels"].get(k) == v for k, v in wanted.items()):
                states.append(self._state(record))
        return sorted(states, key=lambda s: (s.started, s.id))

    def _records(self) -> Records:
        return self.record_files.all()

    def _load(self, instance_id: str) -> dict[str, Any] | None:
        return self.record_files.load(instance_id)

    def _state(self, record: dict[str, Any]) -> InstanceState:
        pid = int(record["pid"])
        code = self.children.exit_code(pid)
        alive = code is None and procfs.alive(pid, record.get("ticks"))
        if not alive and code is None:
            code = self.children.settled_exit_code(pid)
        return InstanceState(
            id=record["id"],
            labels=record["labels"],
            state="running" if alive else "exited",
            port=record.get("port"),
            started=float(record["started"]),
            pid=pid,
            exit_code=code,
            detail="" if alive else ("exited" if code is None else f"exited with code {code}"),
        )

    # exec -------------------------------------------------------------------------------------
    async def exec(self, instance_id: str, argv: Sequence[str], timeout: float) -> ExecResult:
        """Run ``argv`` in a new sandbox built with exactly the instance's binds (its unpacked
        image, its volumes, its own /tmp), environment and user; without bubblewrap (host images),
        in the instance's working directory with its environment."""
        record = self._load(instance_id)
        if record is None or not procfs.alive(int(record["pid"]), record.get("ticks")):
            raise DriverError(f"instance {instance_id} is not running")
        how = record.get("exec")
        if not isinstance(how, dict):
            how = entry_from_proc(record)
        env = await asyncio.to_thread(exec_env, record)
        if how.get("sandbox"):
            # the same bwrap argv, plus: the command dies with its caller (a probe that was cancelled)
            sandbox = list(how["sandbox"])
            return await run_bounded(
                [*sandbox[:-1], "--die-with-parent", "--", *argv], timeout=timeout, env=env, cwd="/"
            )
        return await run_bounded(argv, timeout=timeout, env=env, cwd=str(how.get("cwd") or "/"))

    # drift ------------------------------------------------------------------------------------
    async def verify(self, instance_id: str, spec: InstanceSpec) -> Drifts:
        return await asyncio.to_thread(self._verify, instance_id, spec)

    def _verify(self, instance_id: str, spec: InstanceSpec) -> Drifts:
        record = self._load(instance_id)
        if record is None or not procfs.alive(int(record["pid"]), record.get("ticks")):
            return []
        drifts = []
        rootfs = self.rootfs / str(record["image"]).removeprefix("sha256:")
        if rootfs.is_dir():
            differences = self._rootfs_differences(rootfs)
            if differences:
                shown = ", ".join(f"/{d.path} ({d.kind})" for d in differences[:5])
                more = f" and {len(differences) - 5} more" if len(differences) > 5 else ""
                detail = f"{len(differences)} path(s) differ from the image: {shown}{more}"
                drifts.append(Drift("file system", detail, tuple(differences), rootfs))
        launched = record.get("env")
        expected: dict[str, str] | None = None
        if isinstance(launched, dict):
            host_image = self._is_host_image(spec.image)
            scratch = self.scratch / instance_id
            expected = _hidden(
                self._launch(spec, record.get("port"), rootfs, host_image, scratch).env,
                spec.secrets,
                self.key,
            )
        argv = record.get("argv")
        drifts += launch_drifts(
            (str(record["image"]), spec.image),
            (argv if isinstance(argv, list) else None, spec.argv),
            (launched if isinstance(launched, dict) and expected is not None else None, expected or {}),
            spec.secrets,
        )
        return drifts

    def _rootfs_differences(self, rootfs: Path) -> Differences:
        """The image's files against the list recorded at unpack, re-hashed at most once a second
        per image (instances of one image share its unpacked files)."""
        cached = self._checked.get(rootfs)
        if cached is not None and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        listing, _when = filelist.read(rootfs)
        differences = filelist.compare(rootfs, listing)
        self._checked[rootfs] = (time.monotonic(), differences)
        return differences

    def discard_rootfs(self, image: str, evidence: Path | None = None) -> Path | None:
        """Move a drifted unpacked image aside (into ``evidence`` if given), so the next instance
        of it starts from a fresh unpack; running instances keep what they mounted."""
        rootfs = self.rootfs / image.removeprefix("sha256:")
        if not rootfs.is_dir():
            return None
        aside = evidence or self.rootfs / f".drifted-{rootfs.name}-{int(time.time())}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.rename(rootfs, aside)
        filelist.list_path(rootfs).unlink(missing_ok=True)
        self._checked.pop(rootfs, None)
        return aside

    # stopping ---------------------------------------------------------------------------------
    def _stop(self, instance_id: str, grace: float, keep: Path | None = None) -> None:
        """Stop the instance; with ``keep``, what it wrote (its /tmp) is moved there, else deleted."""
        record = self._load(instance_id)
        if record is None:
            return
        pid, ticks = int(record["pid"]), record.get("ticks")
        if self.children.running(pid, ticks):
            # the app (and bwrap's pid-1 inside) get SIGTERM; the outer bwrap stays to report the exit
            members = procfs.tree(pid)
            if members is None:
                members = procfs.group_members(pid)
            targets = [p for p in members if not (record.get("sandboxed") and p == pid)]
            for member in targets or [pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGTERM)
                    os.kill(member, signal.SIGCONT)  # a stopped (hung) process gets SIGTERM only then
            if not self.children.wait_gone(pid, ticks, grace):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # anything left of its group
            os.killpg(pid, signal.SIGKILL)
        self.children.reap(pid, None, 5)
        # a record of an older version names the instance's own stamper: it ends with the output
        self.children.reap(int(record.get("stamper") or 0), record.get("stamper_ticks"), 2)
        self.stamping.settle(instance_id, 2)  # its last lines in its log before `stop` returns
        scratch = self.scratch / instance_id
        if keep is not None and scratch.is_dir():
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(scratch, keep)
        shutil.rmtree(scratch, ignore_errors=True)
        self.record_files.remove(instance_id)


def _hidden(env: Mapping[str, str], secrets: tuple[str, ...], key: bytes) -> dict[str, str]:
    """The environment as recorded: secret values only as their keyed digest (the record is a file)."""
    return {k: secret_digest(key, v) if k in secrets else v for k, v in env.items()}
