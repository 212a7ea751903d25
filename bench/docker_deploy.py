"""Benchmark: a rolling deploy of 5 containers under load, herdsman against docker-compose.

Both run examples/hello on a debian:bookworm base (python3), on the same Docker engine, with host
networking, behind a proxy, under the same bounded load (8 keep-alive clients, GET /):

- herdsman: the docker driver, 5 replicas behind the embedded router; `herd deploy` of a new
  release (rolling, max_surge 1, max_unavailable 0);
- docker-compose (1.29, what a single-host user picks instead): 5 services web1..web5 on their own
  ports behind HAProxy 2.6 with health checks every 100 ms, `retries 3` and `option redispatch`
  (compose's best case); `docker-compose up -d` with the new image recreates them.

Prints each one's duration and failed requests.

    .venv/bin/python bench/docker_deploy.py
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peers import HAPROXY_IN_FRONT  # noqa: E402

from tests.helpers import Load, free_port, hello_copy, herd, stop_project  # noqa: E402

REPLICAS = 5
HAPROXY = HAPROXY_IN_FRONT


def debian_hello(root: Path, replicas: int) -> int:
    port = hello_copy(root)
    toml = root / "herd.toml"
    text = toml.read_text().replace('base = "host"', 'base = "debian:bookworm"\npackages = ["python3"]')
    toml.write_text(
        text.replace("replicas = 2", f"replicas = {replicas}")
        + '\n[environment.production]\ndriver = "docker"\n'
    )
    return port


def change_app(root: Path, n: int) -> None:
    app = root / "app" / "app.py"
    app.write_text(app.read_text() + f"\n# change {n}\n")


def run_herdsman(work: Path) -> tuple[float, int, int]:
    root = work / "herd" / "hello"
    port = debian_hello(root, REPLICAS)
    try:
        herd(root, "deploy", timeout=900)
        change_app(root, 1)
        herd(root, "bake", timeout=900)  # baking is not what is compared
        with Load(f"http://127.0.0.1:{port}/", workers=8) as load:
            time.sleep(1.0)
            started = time.monotonic()
            herd(root, "deploy", timeout=900)
            seconds = time.monotonic() - started
            time.sleep(1.0)
        return seconds, len(load.served), len(load.failures)
    finally:
        stop_project(root)


def export(root: Path, tag: str) -> None:
    """Bake ``root`` and load its image into Docker as ``tag``."""
    herd(root, "bake", timeout=900)
    archive = root / "image.tar"
    herd(root, "image", "export", "web", "-o", str(archive))
    out = subprocess.run(["docker", "load", "-i", str(archive)], check=True, capture_output=True, text=True)
    loaded = out.stdout.strip().splitlines()[-1].split(": ", 1)[1]  # "Loaded image[ ID]: REF"
    subprocess.run(["docker", "tag", loaded, tag], check=True, capture_output=True)


def compose_file(ports: list[int]) -> str:
    services = []
    for n, port in enumerate(ports, start=1):
        services.append(
            f"""  web{n}:
    image: ${{HELLO_IMAGE}}
    network_mode: host
    read_only: true
    working_dir: /app
    command: ["python3", "app.py"]
    environment: {{PORT: "{port}", DATA_DIR: /data, PYTHONUNBUFFERED: "1", GREETING: hello}}
    volumes: [counter:/data]"""
        )
    return 'version: "2.4"\nservices:\n' + "\n".join(services) + "\nvolumes:\n  counter: {}\n"


def run_compose(work: Path) -> tuple[float, int, int]:
    root = work / "compose" / "hello"
    debian_hello(root, 1)
    name = f"herdbench{os.getpid()}"
    ports = [free_port() for _ in range(REPLICAS)]
    front = free_port()
    (root / "docker-compose.yml").write_text(compose_file(ports))
    servers = "\n".join(
        f"    server web{n} 127.0.0.1:{p} check inter 100ms fall 1 rise 1" for n, p in enumerate(ports)
    )
    (root / "haproxy.cfg").write_text(HAPROXY.format(port=front, servers=servers))
    compose = ["docker-compose", "-p", name, "-f", str(root / "docker-compose.yml")]
    export(root, f"{name}/hello:v1")
    change_app(root, 1)
    export(root, f"{name}/hello:v2")
    proxy = subprocess.Popen(["haproxy", "-f", str(root / "haproxy.cfg")], stderr=subprocess.DEVNULL)
    try:
        env = {**os.environ, "HELLO_IMAGE": f"{name}/hello:v1"}
        subprocess.run([*compose, "up", "-d"], check=True, capture_output=True, env=env)
        time.sleep(3.0)  # every backend up and checked
        with Load(f"http://127.0.0.1:{front}/", workers=8) as load:
            time.sleep(1.0)
            started = time.monotonic()
            env["HELLO_IMAGE"] = f"{name}/hello:v2"
            subprocess.run([*compose, "up", "-d"], check=True, capture_output=True, env=env)
            seconds = time.monotonic() - started
            time.sleep(1.0)
        return seconds, len(load.served), len(load.failures)
    finally:
        proxy.terminate()
        proxy.wait()
        subprocess.run([*compose, "down", "-v"], capture_output=True)
        subprocess.run(["docker", "rmi", f"{name}/hello:v1", f"{name}/hello:v2"], capture_output=True)


def main() -> None:
    for tool in ("docker", "docker-compose", "haproxy"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (make system installs it)")
    python = platform.python_version()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {python}")
    work = Path(tempfile.mkdtemp(prefix="bench-docker-deploy-"))
    try:
        ours = run_herdsman(work)
        peer = run_compose(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'':<34}{'duration':>10}{'requests':>10}{'failed':>8}")
    for label, (seconds, served, failed) in (
        (f"herdsman rolling deploy of {REPLICAS}", ours),
        (f"docker-compose up -d, {REPLICAS} services", peer),
    ):
        print(f"{label:<34}{seconds:>9.2f}s{served:>10}{failed:>8}")


if __name__ == "__main__":
    main()
