"""A two-node Docker Swarm of its own, on this one machine, for the multi-node tests.

Two more dockerds (a manager and a worker), each with its own data root, exec root (so its own
containerd), unix socket and pid file, `--bridge=none --iptables=false`, in a swarm of their own
on 127.0.0.1:2477 (manager) and 127.0.0.1:2478 (worker, joined with the join token). The shared
swarm engine of scripts/system-deps (/run/herd-swarm, port 2377) is never joined or changed.

What this machine allows (found here, see DESIGN.md): Swarm's gossip port (7946) cannot be moved
in engine 20.10 and the shared swarm holds 127.0.0.1:7946, so these engines' network agents do not
start ("error in agentInit" in their logs). Host-network tasks need no network agent: placement,
constraints, node labels, drain, and tasks on both nodes all work; overlay networks and the
ingress mesh (which herdsman never uses) would not. Both nodes report Status.Addr 127.0.0.1.

`stop()` takes everything down: the swarm left on both engines, both dockerds stopped by their pid
(then their containerds end with them), any mount left under the directory unmounted, the
directory removed. Nothing of it outlives the test module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

MANAGER_PORT = 2477
WORKER_PORT = 2478
DATA_PATH_PORT = 4799  # not the shared swarm's 4789


class TwoNodeSwarm:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="herd2n-", dir="/tmp"))  # short: containerd's socket path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.manager_id = ""
        self.worker_id = ""

    def host(self, name: str) -> str:
        return f"unix://{self.root / name / 'docker.sock'}"

    def docker(self, name: str, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["docker", "-H", self.host(name), *args], capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} on {name}: {result.stderr.strip()}")
        return result.stdout.strip()

    def start(self) -> TwoNodeSwarm:
        for name in ("manager", "worker"):
            where = self.root / name
            where.mkdir()
            log = open(where / "dockerd.log", "wb")  # noqa: SIM115 (kept open for the daemon's life)
            self.procs[name] = subprocess.Popen(
                [
                    "dockerd",
                    "--data-root", str(where / "data"),
                    "--exec-root", str(where / "exec"),
                    "-H", self.host(name),
                    "--pidfile", str(where / "dockerd.pid"),
                    "--bridge=none", "--iptables=false", "--ip-masq=false", "--no-new-privileges",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )  # fmt: skip
            log.close()
        for name in ("manager", "worker"):
            self._wait_up(name)
        manager = f"127.0.0.1:{MANAGER_PORT}"
        self.docker(
            "manager", "swarm", "init", "--advertise-addr", manager, "--listen-addr", manager,
            "--data-path-port", str(DATA_PATH_PORT),
        )  # fmt: skip
        token = self.docker("manager", "swarm", "join-token", "-q", "worker")
        worker = f"127.0.0.1:{WORKER_PORT}"
        self.docker(
            "worker", "swarm", "join", "--token", token,
            "--advertise-addr", worker, "--listen-addr", worker, manager,
        )  # fmt: skip
        self.manager_id = self.docker("manager", "info", "--format", "{{.Swarm.NodeID}}")
        self.worker_id = self.docker("worker", "info", "--format", "{{.Swarm.NodeID}}")
        deadline = time.monotonic() + 60
        while (
            self.docker("manager", "node", "inspect", self.worker_id, "--format", "{{.Status.State}}")
            != "ready"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not become ready")
            time.sleep(0.2)
        return self

    def _wait_up(self, name: str) -> None:
        deadline = time.monotonic() + 60
        while self.docker(name, "info", "--format", "{{.ServerVersion}}", check=False) == "":
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                log = (self.root / name / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the {name} dockerd did not come up:\n{log}")
            time.sleep(0.2)

    def label(self, node_id: str, **labels: str) -> None:
        args = [a for k, v in labels.items() for a in ("--label-add", f"{k}={v}")]
        self.docker("manager", "node", "update", *args, node_id)

    def stop(self) -> None:
        for name in ("worker", "manager"):
            if name in self.procs and self.procs[name].poll() is None:
                self.docker(name, "swarm", "leave", "--force", check=False)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.root))
        ]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)

    def leftovers(self) -> list[str]:
        """What of it still exists (for the test to assert nothing does)."""
        left = [str(self.root)] if self.root.exists() else []
        left += [f"pid {p.pid}" for p in self.procs.values() if _alive(p.pid)]
        with contextlib.suppress(OSError):
            left += [
                line.split()[1]
                for line in Path("/proc/mounts").read_text().splitlines()
                if line.split()[1].startswith(str(self.root))
            ]
        return left


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
