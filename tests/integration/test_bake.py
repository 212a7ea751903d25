"""Baking for real: reproducibility across directories and times, the layer cache, herd.lock."""

from __future__ import annotations

import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from herdsman.errors import BakeError
from herdsman.image.bake import bake, image_store
from herdsman.image.progress import NullReporter
from herdsman.image.unpack import unpack_image
from herdsman.spec import load_project
from tests.helpers import HELLO, make_wheel, write_project

APP_TOML = """
[stack]
name = "app"

[service.web]
command = ["python3", "-m", "app"]
port = 8000

[service.web.image]
base = "host"
copy = [{ src = "src", dest = "/app" }]
"""

REQ_TOML = APP_TOML.replace('base = "host"', 'base = "host"\nrequirements = "requirements.txt"')
REQUIREMENTS = "--no-index\n--find-links wheels\nherdtestpkg==1.0\n"


def _copy_hello(dest: Path) -> Path:
    shutil.copytree(HELLO, dest, ignore=shutil.ignore_patterns(".herd", "herd.lock", "__pycache__"))
    return dest / "herd.toml"


def _layer_names(project_file: Path, digest: str) -> list[list[str]]:
    store = image_store(load_project(project_file))
    names = []
    for layer in store.manifest(digest)["layers"]:
        with tarfile.open(store.blob_path(layer["digest"])) as tar:
            names.append(tar.getnames())
    return names


def test_two_copies_in_two_directories_at_two_times_give_one_digest(tmp_path: Path) -> None:
    first = _copy_hello(tmp_path / "one" / "hello")
    digest_one = bake(load_project(first))[0].image.digest
    time.sleep(1.1)
    second = _copy_hello(tmp_path / "elsewhere" / "deeper" / "hello")
    for path in (second.parent / "app").rglob("*"):  # different file times, same content
        os.utime(path, (time.time() + 1000, time.time() + 1000))
    digest_two = bake(load_project(second))[0].image.digest
    assert digest_one == digest_two
    assert digest_one.startswith("sha256:")


def test_layer_is_deterministic_tar(tmp_path: Path) -> None:
    file = _copy_hello(tmp_path / "hello")
    result = bake(load_project(file))[0]
    store = image_store(load_project(file))
    manifest = store.manifest(result.image.digest)
    (layer,) = manifest["layers"]
    blob = store.blob_path(layer["digest"]).read_bytes()
    assert blob[4:8] == b"\0\0\0\0", "gzip header mtime must be 0"
    with tarfile.open(store.blob_path(layer["digest"])) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["app", "app/app.py", "app/migrate.py"]
    for member in members:
        assert (member.uid, member.gid, member.uname, member.gname, member.mtime) == (0, 0, "", "", 0)
        assert not member.pax_headers
    config = store.config(result.image.digest)
    assert config["config"]["Cmd"] == ["python3", "app.py"]
    assert config["config"]["ExposedPorts"] == {"8000/tcp": {}}
    assert config["config"]["Labels"]["herd.service"] == "web"
    annotations = manifest["annotations"]
    assert annotations["org.opencontainers.image.base.name"] == "host"
    assert annotations["dev.herdsman.compressor"].startswith("gzip;level=")
    assert annotations["dev.herdsman.spec.digest"].startswith("sha256:")


def test_source_date_epoch_sets_mtimes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = _copy_hello(tmp_path / "hello")
    plain = bake(load_project(file))[0].image.digest
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    stamped = bake(load_project(file))[0]
    assert stamped.image.digest != plain
    store = image_store(load_project(file))
    layer = store.manifest(stamped.image.digest)["layers"][0]
    with tarfile.open(store.blob_path(layer["digest"])) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}


def test_no_op_bake_reuses_everything(tmp_path: Path) -> None:
    file = _copy_hello(tmp_path / "hello")
    first = bake(load_project(file))[0]
    assert first.built and not first.reused
    second = bake(load_project(file))[0]
    assert second.image.digest == first.image.digest
    assert second.built == () and len(second.reused) == 1


def test_one_file_change_rebuilds_only_the_copy_layer(tmp_path: Path) -> None:
    file = write_project(
        tmp_path / "app",
        REQ_TOML,
        {"src/app.py": "print('v1')\n", "src/util.py": "X = 1\n", "requirements.txt": REQUIREMENTS},
    )
    make_wheel(file.parent / "wheels")
    first = bake(load_project(file))[0]
    assert len(first.built) == 2
    (file.parent / "src" / "app.py").write_text("print('v2')\n")
    second = bake(load_project(file))[0]
    assert second.image.digest != first.image.digest
    assert [b.split()[0] for b in second.built] == ["copy"]
    assert [r.split()[0] for r in second.reused] == ["requirements"]


def test_touching_a_file_without_changing_it_keeps_the_digest(tmp_path: Path) -> None:
    file = write_project(tmp_path / "app", APP_TOML, {"src/app.py": "print(1)\n"})
    first = bake(load_project(file))[0]
    os.utime(file.parent / "src" / "app.py", (1, 1))
    second = bake(load_project(file))[0]
    assert second.image.digest == first.image.digest and not second.built


def test_herdignore_and_dockerignore(tmp_path: Path) -> None:
    files = {
        "src/app.py": "print(1)\n",
        "src/secret.env": "TOKEN=x\n",
        "src/logs/a.log": "x\n",
        "src/logs/keep.log": "x\n",
        "src/.herdignore": "*.env\nlogs\n!logs/keep.log\n",
        "src/__pycache__/app.cpython-311.pyc": b"\0",
    }
    file = write_project(tmp_path / "app", APP_TOML, files)
    result = bake(load_project(file))[0]
    (names,) = _layer_names(file, result.image.digest)
    assert "app/app.py" in names
    assert "app/secret.env" not in names and "app/logs/a.log" not in names
    assert "app/logs/keep.log" in names
    assert not any("__pycache__" in n for n in names)
    # .dockerignore is used when there is no .herdignore
    (file.parent / "src" / ".herdignore").unlink()
    (file.parent / "src" / ".dockerignore").write_text("*.env\n")
    (names,) = _layer_names(file, bake(load_project(file))[0].image.digest)
    assert "app/secret.env" not in names and "app/logs/a.log" in names


def test_requirements_layer_is_pinned_normalised_and_reproducible(tmp_path: Path) -> None:
    file = write_project(
        tmp_path / "a" / "app", REQ_TOML, {"src/app.py": "print(1)\n", "requirements.txt": REQUIREMENTS}
    )
    make_wheel(file.parent / "wheels")
    reporter = NullReporter()
    result = bake(load_project(file), reporter=reporter)[0]
    assert any("resolving requirements.txt" in note for note in reporter.notes)
    lock_text = (file.parent / "herd.lock").read_text()
    assert "herdtestpkg" in lock_text and 'url = "file:wheels/herdtestpkg-1.0-py3-none-any.whl"' in lock_text
    assert str(tmp_path) not in lock_text, "the lock must not hold this checkout's absolute path"

    store = image_store(load_project(file))
    req_layer = store.manifest(result.image.digest)["layers"][0]
    with tarfile.open(store.blob_path(req_layer["digest"])) as tar:
        names = tar.getnames()
        script = tar.extractfile("opt/herd/python/bin/herdtestpkg")
        assert script is not None
        script_text = script.read().decode()
        record_file = tar.extractfile("opt/herd/python/herdtestpkg-1.0.dist-info/RECORD")
        assert record_file is not None
        record = record_file.read().decode()
    assert "opt/herd/python/herdtestpkg/__init__.py" in names
    assert not any(n.endswith((".pyc", "direct_url.json")) for n in names)
    assert script_text.startswith("#!/usr/bin/env python3\n")
    assert str(tmp_path) not in record and "direct_url.json" not in record
    config = store.config(result.image.digest)["config"]
    assert "PYTHONPATH=/opt/herd/python" in config["Env"]

    # a second checkout elsewhere, with the lock, gives the same image
    other = tmp_path / "b" / "c" / "app"
    shutil.copytree(file.parent, other, ignore=shutil.ignore_patterns(".herd"))
    reporter2 = NullReporter()
    assert bake(load_project(other / "herd.toml"), reporter=reporter2)[0].image.digest == result.image.digest
    assert not any("resolving" in note for note in reporter2.notes), "the lock must be used as it is"


def test_changed_requirements_are_resolved_again_and_refresh_rewrites(tmp_path: Path) -> None:
    file = write_project(tmp_path / "app", REQ_TOML, {"src/app.py": "", "requirements.txt": REQUIREMENTS})
    make_wheel(file.parent / "wheels", version="1.0")
    make_wheel(file.parent / "wheels", version="2.0")
    first = bake(load_project(file))[0]
    assert 'version = "1.0"' in (file.parent / "herd.lock").read_text()
    (file.parent / "requirements.txt").write_text(REQUIREMENTS.replace("==1.0", ">=1.0"))
    reporter = NullReporter()
    second = bake(load_project(file), reporter=reporter)[0]
    assert any("requirements.txt changed" in n for n in reporter.notes)
    assert 'version = "2.0"' in (file.parent / "herd.lock").read_text()
    assert second.image.digest != first.image.digest
    reporter = NullReporter()
    bake(load_project(file), refresh=True, reporter=reporter)
    assert any("--refresh" in n for n in reporter.notes)


def test_sdist_only_requirement_is_refused(tmp_path: Path) -> None:
    file = write_project(
        tmp_path / "app",
        REQ_TOML,
        {"src/app.py": "", "requirements.txt": "--no-index\n--find-links wheels\nnosuchpkg==1.0\n"},
    )
    (file.parent / "wheels").mkdir()
    with pytest.raises(BakeError, match="pip could not resolve"):
        bake(load_project(file))
    assert not (file.parent / "herd.lock").exists(), "a failed bake must not write a half lock"


def test_copy_follows_dockers_copy_for_files_and_directories(tmp_path: Path) -> None:
    """A file goes into a dest ending with "/" and is renamed to any other dest; a directory's
    contents go into dest, with or without the slash (issue 14: app.py used to land at
    /app/app.py/app.py)."""
    toml = APP_TOML.replace(
        'copy = [{ src = "src", dest = "/app" }]',
        """copy = [
    { src = "app.py", dest = "/app/app.py" },
    { src = "app.py", dest = "/srv/" },
    { src = "app.py", dest = "/" },
    { src = "static", dest = "/www" },
    { src = "static", dest = "/www2/" },
]""",
    )
    file = write_project(tmp_path / "p", toml, {"app.py": "print(1)\n", "static/index.html": "hi"})
    assert load_project(file).stack.service["web"].image.copy_steps[1].dest == "/srv/"
    result = bake(load_project(file))[0]
    assert _layer_names(file, result.image.digest) == [
        ["app", "app/app.py"],  # parents are written explicitly
        ["srv", "srv/app.py"],
        ["app.py"],
        ["www", "www/index.html"],
        ["www2", "www2/index.html"],
    ]
    rootfs = tmp_path / "rootfs"
    unpack_image(image_store(load_project(file)), result.image.digest, rootfs)
    assert (rootfs / "app" / "app.py").read_text() == "print(1)\n"
    assert (rootfs / "srv" / "app.py").is_file() and (rootfs / "www2" / "index.html").is_file()


def test_missing_copy_source_is_a_clear_error(tmp_path: Path) -> None:
    file = write_project(tmp_path / "app", APP_TOML, {})
    with pytest.raises(BakeError, match="copy source 'src' does not exist"):
        bake(load_project(file))


def test_unknown_service_is_a_clear_error(tmp_path: Path) -> None:
    file = write_project(tmp_path / "app", APP_TOML, {"src/a.py": ""})
    with pytest.raises(BakeError, match="no service 'api'"):
        bake(load_project(file), ["api"])


def test_quick_bake_gives_the_same_image_as_a_full_bake(tmp_path: Path) -> None:
    from herdsman.image.assemble import quick_bake

    file = write_project(
        tmp_path / "app", REQ_TOML, {"src/app.py": "print('v1')\n", "requirements.txt": REQUIREMENTS}
    )
    make_wheel(file.parent / "wheels")
    home = file.parent / ".herd"
    assert quick_bake(file, home) is None, "nothing prepared yet"
    bake(load_project(file))
    (file.parent / "src" / "app.py").write_text("print('v2')\n")
    quick = quick_bake(file, home)
    assert quick is not None and [b.split()[0] for b in quick[0].built] == ["copy"]
    assert quick[0].reused and quick[0].reused[0].startswith("requirements")
    # a full bake of the same inputs in a fresh store agrees byte for byte
    other = tmp_path / "copy"
    shutil.copytree(file.parent, other, ignore=shutil.ignore_patterns(".herd"))
    assert bake(load_project(other / "herd.toml"))[0].image.digest == quick[0].image.digest
    # herd.toml changed: the prepared recipes no longer apply
    file.write_text(file.read_text().replace("port = 8000", "port = 8001"))
    assert quick_bake(file, home) is None


def test_quick_bake_is_refused_when_a_prepared_layer_is_gone(tmp_path: Path) -> None:
    from herdsman.image.assemble import quick_bake

    file = write_project(tmp_path / "app", REQ_TOML, {"src/app.py": "", "requirements.txt": REQUIREMENTS})
    make_wheel(file.parent / "wheels")
    result = bake(load_project(file))[0]
    store = image_store(load_project(file))
    req_layer = store.manifest(result.image.digest)["layers"][0]["digest"]
    store.blob_path(req_layer).unlink()
    assert quick_bake(file, file.parent / ".herd") is None
