"""Benchmark: `herd bake` against `docker build` (classic builder) on the same app and the same base.

Three cases, each timed as whole commands (CLI start-up included on both sides), median of N runs:
  cold        the layer cache is empty, the base is present (herd: .herd/cache removed;
              docker: --no-cache)
  no-op       nothing changed
  one file    one source file changed (only the copy layer is rebuilt)

The app is examples/hello on `debian:bookworm` + python3. The base is baked once by
herdsman (mmdebstrap), exported and `docker load`ed, so both tools start from the very same bytes;
building the base is not part of the measurement. Prints a table and the ratios herd/docker.

    .venv/bin/python bench/bake.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from herdsman.image.export import export_image
from herdsman.image.lock import Lock
from herdsman.image.oci import ImageStore

ROOT = Path(__file__).resolve().parent.parent
HERD = [sys.executable, "-m", "herdsman"]
BASE_TAG = "herd-bench/debian-python:latest"
IMAGE_TAG = "herd-bench/hello:latest"
DOCKERFILE = f"""FROM {BASE_TAG}
COPY app /app
WORKDIR /app
ENV PYTHONUNBUFFERED=1
CMD ["python3", "app.py"]
"""
TOML = """
[stack]
name = "bench"

[service.web]
command = ["python3", "app.py"]
port = 8000

[service.web.image]
base = "debian:bookworm"
packages = ["python3"]
copy = [{ src = "app", dest = "/app" }]
workdir = "/app"
env = { PYTHONUNBUFFERED = "1" }
"""


# A user's shell caches bytecode; this machine's environment turns that off (PYTHONDONTWRITEBYTECODE),
# which would charge herd for recompiling its own modules on every run. Measure as a user runs it.
HERD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def median_of(
    runs: int, prepare: Callable[[], None], command: list[str], cwd: Path, env: dict[str, str] | None = None
) -> float:
    times = []
    for _ in range(runs):
        prepare()
        times.append(run(command, cwd, env))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per case (median reported)")
    args = parser.parse_args()
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode:
        sys.exit("a running Docker engine is needed (make bench starts it when run as root)")

    work = Path(tempfile.mkdtemp(prefix="herd-bench-bake-"))
    try:
        shutil.copytree(ROOT / "examples" / "hello" / "app", work / "app")
        (work / "herd.toml").write_text(TOML)
        (work / "Dockerfile").write_text(DOCKERFILE)
        (work / ".dockerignore").write_text(".herd\nherd.lock\nherd.toml\nDockerfile\n")
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}

        print("baking the base once (mmdebstrap) and loading it into Docker...", flush=True)
        base_seconds = run([*HERD, "bake"], work, HERD_ENV)
        pin = Lock.load(work / "herd.lock").get("web", "base")
        assert pin is not None
        store = ImageStore(work / ".herd" / "images")
        export_image(store, pin["digest"], work / "base.tar", fmt="docker", tag=BASE_TAG)
        subprocess.run(["docker", "load", "-i", str(work / "base.tar")], check=True, capture_output=True)
        (work / "base.tar").unlink()

        app = work / "app" / "app.py"
        original = app.read_text()
        counter = iter(range(10**6))

        def clear_herd_cache() -> None:
            shutil.rmtree(work / ".herd" / "cache", ignore_errors=True)

        def change_file() -> None:
            app.write_text(original + f"# change {next(counter)}\n")

        def nothing() -> None:
            pass

        herd = [*HERD, "bake"]
        docker = ["docker", "build", "-q", "-t", IMAGE_TAG, "."]
        run(docker, work, env)  # warm docker's cache for the no-op case
        results = {
            "cold": (
                median_of(args.runs, clear_herd_cache, herd, work, HERD_ENV),
                median_of(args.runs, nothing, [*docker[:2], "--no-cache", *docker[2:]], work, env),
            ),
            "no-op": (
                median_of(args.runs, nothing, herd, work, HERD_ENV),
                median_of(args.runs, nothing, docker, work, env),
            ),
            "one file": (
                median_of(args.runs, change_file, herd, work, HERD_ENV),
                median_of(args.runs, change_file, docker, work, env),
            ),
        }
    finally:
        subprocess.run(["docker", "rmi", "-f", IMAGE_TAG, BASE_TAG], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    docker_version = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Docker engine {docker_version}; base build (mmdebstrap, once): {base_seconds:.1f}s; "
        f"median of {args.runs} runs"
    )
    print("| case | herd bake | docker build (classic) | herd / docker |")
    print("| --- | ---: | ---: | ---: |")
    for case, (herd_s, docker_s) in results.items():
        print(f"| {case} | {herd_s * 1000:.0f} ms | {docker_s * 1000:.0f} ms | {herd_s / docker_s:.2f} |")
    print(json.dumps({case: {"herd_s": h, "docker_s": d} for case, (h, d) in results.items()}))


if __name__ == "__main__":
    main()
