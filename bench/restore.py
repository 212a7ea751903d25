"""Benchmark: how long a service is unavailable during `herd volume restore`, under a bounded load.

examples/hello (2 replicas, the process driver) with its `counter` volume filled with ``--mb``
megabytes of random data in ``--files`` files, backed up with `herd volume backup`, then restored
while 4 keep-alive clients send GET /healthz through the router. Reported: the restore's duration,
requests sent meanwhile, how many failed (the router's 503 while the pool is empty), and the
failing window (first failed request to last). ``--code DIR`` runs `herd` from another source tree
(e.g. `git archive COMMIT herdsman | tar -x -C DIR`) to measure a version before a change.

    .venv/bin/python bench/restore.py [--mb 400] [--files 40] [--code DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import hello_copy  # noqa: E402


class Probe:
    """``workers`` keep-alive clients in threads until stopped (at most ``limit`` seconds);
    every answer is kept as (monotonic time, status or 0 for a transport error)."""

    def __init__(self, url: str, workers: int = 4, limit: float = 300.0) -> None:
        self.url, self.limit = url, limit
        self.answers: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def __enter__(self) -> Probe:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    status = http.get(self.url).status_code
                except httpx.HTTPError:
                    status = 0
                self.answers.append((time.monotonic(), status))


def measure(root: Path, port: int, archive: Path, env: dict[str, str]) -> dict[str, float]:
    """Restore ``archive`` into the counter volume under load; what the clients saw."""
    with Probe(f"http://127.0.0.1:{port}/healthz") as probe:
        time.sleep(0.5)
        started = time.monotonic()
        out = herd(root, env, "volume", "restore", "counter", str(archive), "--yes")
        ended = time.monotonic()
        time.sleep(0.5)
    during = [(t, s) for t, s in probe.answers if started <= t <= ended]
    failed = [t for t, s in during if s != 200]
    return {
        "restore_s": ended - started,
        "requests": len(during),
        "failed": len(failed),
        "window_s": (failed[-1] - failed[0]) if failed else 0.0,
        "output": out,  # type: ignore[dict-item]
    }


# `herd` from the source tree in HERD_CODE: the editable install's finder would win over sys.path
LAUNCH = """import os, runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path.insert(0, os.environ["HERD_CODE"])
sys.argv[0] = "herd"
runpy.run_module("herdsman", run_name="__main__", alter_sys=True)
"""


def herd(root: Path, env: dict[str, str], *args: str) -> str:
    launch = ["-c", LAUNCH] if "HERD_CODE" in env else ["-m", "herdsman"]
    result = subprocess.run(
        [sys.executable, *launch, "-f", str(root / "herd.toml"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if result.returncode != 0:
        raise SystemExit(f"herd {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def fill(volume: Path, megabytes: int, files: int) -> None:
    volume.mkdir(parents=True, exist_ok=True)
    size = megabytes * 2**20 // files
    for number in range(files):
        (volume / f"blob-{number:03}.bin").write_bytes(os.urandom(size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--code", type=Path, help="run `herd` from this source tree")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.code:
        env["HERD_CODE"] = str(args.code.resolve())
    work = Path(tempfile.mkdtemp(prefix="herd-bench-restore-"))
    root = work / "hello"
    port = hello_copy(root)
    try:
        herd(root, env, "deploy")
        fill(root / ".herd" / "volumes" / "counter", args.mb, args.files)
        archive = work / "counter.tar"
        herd(root, env, "volume", "backup", "counter", str(archive))
        result = measure(root, port, archive, env)
        print(result.pop("output"))
        print(
            f"{args.mb} MB in {args.files} files: restore {result['restore_s']:.2f} s, "
            f"{result['requests']:.0f} requests during it, {result['failed']:.0f} failed, "
            f"failing window {result['window_s']:.2f} s"
        )
    finally:
        subprocess.run(
            [sys.executable, "-m", "herdsman", "-f", str(root / "herd.toml"), "down"],
            capture_output=True,
            env=env,
            timeout=120,
        )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
