"""Small builders shared by tests: projects on disk, hand-made wheels, a load generator, `herd` runs."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello"


class RunningRegistry:
    """Debian's docker-registry serving on a free 127.0.0.1 port, its data under ``root``."""

    def __init__(self, root: Path, auth: str = "") -> None:
        import httpx

        from tests.conftest import need_command

        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        config = root / "config.yml"
        storage = f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        config.write_text(
            f"version: 0.1\nlog:\n  level: error\n{storage}http:\n  addr: {self.address}\n{auth}"
        )
        self.process = subprocess.Popen(
            [need_command("docker-registry"), "serve", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                httpx.get(f"http://{self.address}/v2/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError("docker-registry did not start")

    def blob_file(self, digest: str) -> Path:
        hex_ = digest.removeprefix("sha256:")
        return (
            self.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2] / hex_ / "data"
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def write_project(root: Path, toml: str, files: dict[str, str | bytes] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "herd.toml").write_text(toml)
    for name, content in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root / "herd.toml"


def make_wheel(directory: Path, name: str = "herdtestpkg", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel with a console script (to exercise shebang rewriting)."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n\ndef main():\n    print('hi from {name}')\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: herd-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{dist}/entry_points.txt": f"[console_scripts]\n{name} = {name}:main\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in sorted(files.items()):
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, text)
    return wheel


class Load:
    """A bounded load of keep-alive GETs from a few concurrent clients, in a thread, until stopped.
    Remembers every failure (non-200 or transport error) and the X-Herd-Release of each answer."""

    def __init__(self, url: str, workers: int = 4) -> None:
        import threading

        self.url = url
        self.workers = workers
        self.failures: list[str] = []
        self.served: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        import asyncio

        import httpx

        async def worker(http: httpx.AsyncClient) -> None:
            while not self._stop.is_set():
                try:
                    response = await http.get(self.url)
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code} {response.text}")
                    self.served.append(response.headers.get("x-herd-release", ""))
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

        async def main() -> None:
            async with httpx.AsyncClient(timeout=10) as http:
                await asyncio.gather(*(worker(http) for _ in range(self.workers)))

        asyncio.run(main())


def herd(
    project: Path, *args: str, check: bool = True, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `herd` command on a project, as a user would (``env``: variables to add or, with a
    value of "", to remove)."""
    environ = None
    if env is not None:
        environ = {k: v for k, v in {**os.environ, **env}.items() if v != ""}
    result = subprocess.run(
        [sys.executable, "-m", "herdsman", "-f", str(project / "herd.toml"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"herd {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def wait_for(condition, seconds: float = 30.0, every: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it returns something true (returned), or fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not true within {seconds}s: {condition}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hello_copy(root: Path, *, interval: str = "100ms", template: Path | None = None) -> int:
    """examples/hello copied to ``root`` with fast health checks and its route on a free port
    (tests never take a fixed one); returns that port. With ``template`` (a baked variant, e.g. the
    docker one), that is copied instead, images included, under a stack name of its own (Docker's
    container and volume names are per stack)."""
    if template is not None:
        shutil.copytree(template, root, ignore=shutil.ignore_patterns(*TEMPLATE_SKIP))
        toml = root / "herd.toml"
        text = re.sub(
            r'listen = "127\.0\.0\.1:\d+"', f'listen = "127.0.0.1:{(port := free_port())}"', toml.read_text()
        )
        toml.write_text(text.replace('name = "hello"', f'name = "hello-{os.urandom(3).hex()}"', 1))
        return port
    shutil.copytree(HELLO, root, ignore=shutil.ignore_patterns(".herd", "__pycache__"))
    port = free_port()
    toml = root / "herd.toml"
    text = toml.read_text().replace('interval = "500ms"', f'interval = "{interval}"')
    text = text.replace('timeout = "500ms"', f'timeout = "{interval}"')
    toml.write_text(text.replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    return port


# what a copy of a baked template leaves behind: everything but its images, caches and lock
TEMPLATE_SKIP = (
    "run",
    "logs",
    "state.db*",
    "volumes",
    "quarantine",
    "rootfs",
    "agent-*.token",
    "__pycache__",
)


def stack_name(root: Path) -> str:
    return re.search(r'^name = "([^"]+)"', (root / "herd.toml").read_text(), re.M).group(1)  # type: ignore[union-attr]


def stack_id(root: Path) -> str:
    """The stack's identity on a driver (its name plus a hash of its directory)."""
    from herdsman.spec import load_project

    return load_project(root / "herd.toml").stack_id


def stop_project(root: Path, env: str = "production") -> None:
    """Stop the project's agent (by the pid in its lock file) and everything it runs; a Docker
    project's named volumes are removed too (they would outlive the test otherwise)."""
    pid_file = root / ".herd" / "run" / f"agent-{env}.pid"
    if pid_file.exists() and pid_file.read_text().strip().isdigit():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    herd(root, "down", check=False)
    if on_docker(root):
        docker = docker_cmd(root)
        label = f"label=herd.stack-id={stack_id(root)}"
        if driver_of(root) == "swarm":  # what `herd down` left (none, unless it failed): services, secrets
            for kind in ("service", "secret"):
                left = subprocess.run(
                    [*docker, kind, "ls", "-q", "--filter", label], capture_output=True, text=True
                )
                if left.stdout.split():
                    subprocess.run([*docker, kind, "rm", *left.stdout.split()], capture_output=True)
            wait_for(
                lambda: (
                    not subprocess.run(
                        [*docker, "ps", "-aq", "--filter", label], capture_output=True, text=True
                    ).stdout.split()
                ),
                30,
            )
        volumes = subprocess.run(
            [*docker, "volume", "ls", "-q", "--filter", label], capture_output=True, text=True
        )
        for volume in volumes.stdout.split():
            subprocess.run([*docker, "volume", "rm", "-f", volume], capture_output=True)


def instances(project: Path) -> list[dict[str, str]]:
    """`herd ps` as rows (running or exited): id, service, release, image, state (its first word),
    health, uptime, address and, on a multi-node driver, node; cut at the header's column starts."""
    header, *lines = herd(project, "ps").stdout.splitlines()
    names = header.split()
    starts = [header.index(f" {name}") + 1 if i else 0 for i, name in enumerate(names)]
    rows = []
    for line in lines:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        row = dict(zip(["id", *names[1:]], cells, strict=True))
        row["state"] = row["state"].split(" ")[0]
        rows.append(row)
    return [r for r in rows if r["state"] in ("running", "exited")]


# driver-aware handles on a running instance, for tests that break things ---------------------------
SWARM_HOST = "unix:///run/herd-swarm/docker.sock"  # the swarm engine scripts/system-deps starts


def driver_of(root: Path) -> str:
    """The driver of the project's production environment: process, docker or swarm."""
    found = re.search(r'^driver = "([a-z]+)"', (root / "herd.toml").read_text(), re.M)
    return found.group(1) if found else "process"


def on_docker(root: Path) -> bool:
    """Its instances are containers of a Docker engine (the docker or the swarm driver)."""
    return driver_of(root) in ("docker", "swarm")


def docker_cmd(root: Path | None = None) -> list[str]:
    """The docker command for the engine the project's containers run on."""
    return ["docker", "-H", SWARM_HOST] if root is not None and driver_of(root) == "swarm" else ["docker"]


def container_of(instance: str, root: Path | None = None) -> str:
    found = subprocess.run(
        [*docker_cmd(root), "ps", "-aq", "--filter", f"label=herd.instance={instance}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert found, f"no container for {instance}"
    return found[0]


def app_pid(root: Path, instance: str) -> int:
    """The instance's application process: the container's main process, or on the process driver
    the member of the instance's process group running app.py (inside bubblewrap)."""
    if on_docker(root):
        out = subprocess.run(
            [*docker_cmd(root), "inspect", "-f", "{{.State.Pid}}", container_of(instance, root)],
            capture_output=True,
        )
        init = int(out.stdout.strip())  # Docker's init; the app is its child
        children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
        return int(children[0]) if children else init
    group = int(json.loads((root / ".herd" / "run" / "instances" / f"{instance}.json").read_text())["pid"])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[2]) == group and b"app.py" in cmd and b"bwrap" not in cmd:
            return int(entry.name)
    raise AssertionError(f"no app process in the group of {instance}")


def write_tmp(root: Path, instance: str, name: str, text: str) -> None:
    """Write a file into the instance's private /tmp (as the instance itself could)."""
    if on_docker(root):
        script = f"printf '%s' '{text}' > /tmp/{name}"
        subprocess.run(
            [*docker_cmd(root), "exec", container_of(instance, root), "sh", "-c", script], check=True
        )
    else:
        (root / ".herd" / "run" / "scratch" / instance / name).write_text(text)


def volume_dir(root: Path, volume: str) -> Path:
    """Where a volume's data lives on this machine."""
    if on_docker(root):
        name = f"herd-{stack_id(root)}-{volume}"
        out = subprocess.run(
            [*docker_cmd(root), "volume", "inspect", "-f", "{{.Mountpoint}}", name], capture_output=True
        )
        return Path(out.stdout.decode().strip())
    return root / ".herd" / "volumes" / volume


def autoscaled_hello(root: Path, *, slow: float, max_count: int) -> None:
    """examples/hello (copied at ``root``) with a `/slow` path answering after ``slow`` seconds and
    an autoscaler wanting one instance per request in flight, from 1 to ``max_count``, back in
    after a calm of 3 s."""
    app = root / "app" / "app.py"
    path = (
        '        if self.path == "/slow":\n'
        f"            time.sleep({slow})\n"
        '            self.reply(200, "text/plain", "slow\\n")\n'
        "            return\n"
    )
    text = app.read_text().replace(
        '        if self.path == "/healthz":\n', path + '        if self.path == "/healthz":\n', 1
    )
    app.write_text(text.replace("import html\n", "import html\nimport time\n", 1))
    scale = f"""
[service.web.scale]
min = 1
max = {max_count}
target_inflight = 1
scale_in_window = "3s"
"""
    (root / "herd.toml").write_text((root / "herd.toml").read_text() + scale)
