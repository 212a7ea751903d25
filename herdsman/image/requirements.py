"""The `requirements` layer: Python dependencies installed with pip into an image directory.

Resolution and installation are separate on purpose. Resolving (pip's dry-run report) turns a
requirements file into exact wheels — name, version, URL, sha256 — recorded in herd.lock. Installing
takes exactly those wheels, hash-checked, with no dependency resolution, so the layer is the same on
every machine until `--refresh`. Wheels only: an sdist would run a build on the baker's machine.

pip leaves machine-specific traces that would break reproducibility; they are removed here:
.pyc files (installed with --no-compile), direct_url.json (absolute paths), shebangs naming the
baker's interpreter, and the RECORD lines describing either.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from herdsman.errors import BakeError
from herdsman.image.oci import file_digest
from herdsman.image.progress import Reporter
from herdsman.image.tarball import Entry

PYTHON_TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
SHEBANG = b"#!/usr/bin/env python3"


def _pip(args: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise BakeError(
            f"pip could not {what}:\n{tail}",
            hint="only wheels are installed (no source builds): pin versions that publish wheels",
        )
    return result


def needs_resolving(root: Path, requirements: str, pinned: dict[str, Any] | None) -> str:
    """Why the lock entry cannot be used as it is ("" when it can)."""
    if pinned is None:
        return "not in herd.lock yet"
    file = root / requirements
    if pinned.get("file") != requirements:
        return f"{requirements} is new"
    if not file.is_file():
        raise BakeError(
            f"requirements file {file} does not exist", hint="fix image.requirements in herd.toml"
        )
    if pinned.get("file_digest") != file_digest(file):
        return f"{requirements} changed"
    if pinned.get("python") != PYTHON_TAG:
        return f"herd.lock was resolved for {pinned.get('python')}, this is {PYTHON_TAG}"
    return ""


def resolve(root: Path, requirements: str, reporter: Reporter) -> dict[str, Any]:
    """Resolve a requirements file into exact wheels (the herd.lock entry)."""
    file = root / requirements
    if not file.is_file():
        raise BakeError(
            f"requirements file {file} does not exist", hint="fix image.requirements in herd.toml"
        )
    with (
        tempfile.TemporaryDirectory(prefix="herd-resolve-") as tmp,
        reporter.task(f"resolving {requirements}"),
    ):
        report_file = Path(tmp) / "report.json"
        _pip(
            [
                "install",
                "--dry-run",
                "--quiet",
                "--ignore-installed",
                "--only-binary=:all:",
                "--report",
                str(report_file),
                "-r",
                str(file),
            ],
            cwd=root,
            what=f"resolve {requirements}",
        )
        report = json.loads(report_file.read_text())
    packages = []
    for item in report.get("install", []):
        info = item.get("download_info", {})
        url = str(info.get("url", ""))
        archive = info.get("archive_info", {})
        sha = (archive.get("hashes") or {}).get("sha256") or str(archive.get("hash", "")).removeprefix(
            "sha256="
        )
        name = item["metadata"]["name"]
        if not url.endswith(".whl"):
            raise BakeError(
                f"{name} resolved to {url}, which is not a wheel", hint="pin a version with wheels"
            )
        if not sha:
            raise BakeError(f"pip reported no sha256 for {name} ({url})")
        packages.append(
            {
                "name": name,
                "version": item["metadata"]["version"],
                "url": _portable_url(url, root),
                "sha256": sha,
            }
        )
    packages.sort(key=lambda p: p["name"].lower())
    return {
        "file": requirements,
        "file_digest": file_digest(file),
        "python": PYTHON_TAG,
        "packages": packages,
    }


def _portable_url(url: str, root: Path) -> str:
    """file:// URLs inside the project become project-relative, so the lock works in any checkout."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return url
    path = Path(unquote(parsed.path)).resolve()
    try:
        return "file:" + path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return url


def _install_url(url: str, root: Path) -> str:
    if url.startswith("file:") and not url.startswith("file://"):
        return (root / url.removeprefix("file:")).resolve().as_uri()
    return url


def layer_material(pinned: dict[str, Any], target: str) -> dict[str, Any]:
    wheels = [[p["name"], p["version"], p["sha256"]] for p in pinned["packages"]]
    return {"wheels": wheels, "python": pinned["python"], "target": target}


def install(root: Path, pinned: dict[str, Any], target: str, stage: Path, reporter: Reporter) -> list[Entry]:
    """Install the pinned wheels under ``stage`` + ``target`` and return the layer's entries."""
    dest = stage / target.strip("/")
    lines = [
        f"{p['name']} @ {_install_url(p['url'], root)} --hash=sha256:{p['sha256']}"
        for p in pinned["packages"]
    ]
    req_file = stage.parent / "pinned-requirements.txt"
    req_file.write_text("\n".join(lines) + "\n")
    with reporter.task(f"installing {len(lines)} Python package(s)"):
        _pip(
            [
                "install",
                "--quiet",
                "--no-compile",
                "--no-deps",
                "--only-binary=:all:",
                "--require-hashes",
                "--no-warn-script-location",
                "--target",
                str(dest),
                "-r",
                str(req_file),
            ],
            cwd=root,
            what="install the pinned wheels",
        )
    normalise(dest)
    return [
        Entry(
            str(path.relative_to(stage)),
            "dir" if path.is_dir() and not path.is_symlink() else "symlink" if path.is_symlink() else "file",
            executable=path.is_file() and bool(path.stat().st_mode & 0o111),
            source=path if path.is_file() and not path.is_symlink() else None,
            target=str(path.readlink()) if path.is_symlink() else "",
        )
        for path in sorted(dest.rglob("*"))
    ]


def normalise(site: Path) -> None:
    """Remove what ties an installation to the machine and time it was made."""
    changed: dict[Path, bytes | None] = {}
    for cache in sorted(site.rglob("__pycache__"), reverse=True):
        for pyc in cache.iterdir():
            changed[pyc] = None
        shutil.rmtree(cache)
    for direct in site.glob("*.dist-info/direct_url.json"):
        changed[direct] = None
        direct.unlink()
    scripts = site / "bin"
    if scripts.is_dir():
        for script in scripts.iterdir():
            if not script.is_file():
                continue
            data = script.read_bytes()
            first, newline, rest = data.partition(b"\n")
            if first.startswith(b"#!") and b"python" in first:
                script.write_bytes(SHEBANG + newline + rest)
                changed[script] = script.read_bytes()
    for record in site.glob("*.dist-info/RECORD"):
        _rewrite_record(site, record, changed)


def _rewrite_record(site: Path, record: Path, changed: dict[Path, bytes | None]) -> None:
    """Drop RECORD rows of removed files and give rewritten files their new hash and size."""
    by_path = {p.resolve(): data for p, data in changed.items()}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in csv.reader(io.StringIO(record.read_text())):
        if not row:
            continue
        path = (site / row[0]).resolve()
        if path in by_path:
            data = by_path[path]
            if data is None:
                continue
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            row = [row[0], f"sha256={digest}", str(len(data))]
        writer.writerow(row)
    record.write_text(out.getvalue())
