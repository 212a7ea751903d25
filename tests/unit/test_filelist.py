"""The per-file digest list of an unpacked image: every kind of change is found, nothing else is."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.image import filelist
from herdsman.image.filelist import compare, copy_differences, record


def tree(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "app.py").write_text("print('hi')\n")
    (root / "app" / "data.bin").write_bytes(os.urandom(3000))
    (root / "etc").mkdir()
    (root / "etc" / "conf").write_text("a=1\n")
    os.symlink("app/app.py", root / "main")
    return root


def kinds(root: Path, listing: filelist.Listing) -> dict[str, str]:
    return {d.path: d.kind for d in compare(root, listing)}


def test_every_kind_of_change_is_found(tmp_path: Path) -> None:
    root = tree(tmp_path / "rootfs")
    listing = record(root)
    assert compare(root, listing) == []
    (root / "app" / "app.py").write_text("print('HI')\n")  # same size, other content
    (root / "etc" / "conf").chmod(0o600)
    (root / "etc" / "new").write_text("x")
    (root / "app" / "data.bin").unlink()
    os.unlink(root / "main")
    os.symlink("etc/conf", root / "main")
    assert kinds(root, listing) == {
        "app/app.py": "modified",
        "etc/conf": "mode",
        "etc/new": "added",
        "app/data.bin": "removed",
        "main": "symlink",
    }


def test_a_forged_mtime_does_not_hide_a_change(tmp_path: Path) -> None:
    root = tree(tmp_path / "rootfs")
    listing = record(root)
    path = root / "etc" / "conf"
    info = path.stat()
    path.write_text("a=2\n")
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert kinds(root, listing) == {"etc/conf": "modified"}


def test_the_list_lives_beside_the_rootfs_and_is_made_late_for_old_ones(tmp_path: Path) -> None:
    root = tree(tmp_path / "rootfs" / "abc")
    listing, when = filelist.read(root)  # no list yet: recorded now, and said so
    assert when == "late" and "app/app.py" in listing
    assert filelist.list_path(root) == tmp_path / "rootfs" / "abc.files.json"
    filelist.write(root, record(root))
    assert filelist.read(root)[1] == "at unpack"


def test_evidence_keeps_changed_files_and_the_list(tmp_path: Path) -> None:
    root = tree(tmp_path / "rootfs")
    listing = record(root)
    (root / "etc" / "conf").write_text("tampered\n")
    (root / "etc" / "evil").write_text("#!/bin/sh\n")
    os.unlink(root / "main")
    os.symlink("/etc/shadow", root / "main")  # never followed: kept as a link
    dest = tmp_path / "evidence"
    copy_differences(root, compare(root, listing), dest)
    assert (dest / "files" / "etc" / "conf").read_text() == "tampered\n"
    assert (dest / "files" / "etc" / "evil").exists()
    assert os.readlink(dest / "files" / "main") == "/etc/shadow"
    listed = json.loads((dest / "differences.json").read_text())
    assert {d["path"] for d in listed} == {"etc/conf", "etc/evil", "main"}


names = st.text(alphabet="abcdefgh", min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(
    files=st.dictionaries(names, st.binary(max_size=64), min_size=1, max_size=8),
    data=st.data(),
)
def test_exactly_the_mutations_made_are_found(
    tmp_path_factory, files: dict[str, bytes], data: st.DataObject
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("t")
    for name, content in files.items():
        (root / name).write_bytes(content)
    listing = record(root)
    changed = data.draw(st.sets(st.sampled_from(sorted(files)), max_size=len(files)))
    removed = data.draw(st.sets(st.sampled_from(sorted(set(files) - changed) or ["-"]), max_size=2)) - {"-"}
    added = data.draw(st.sets(names.map(lambda n: n + "_new"), max_size=3))
    for name in changed:
        (root / name).write_bytes(files[name] + b"!")
    for name in removed:
        (root / name).unlink()
    for name in added:
        (root / name).write_bytes(b"new")
    expected = {
        **dict.fromkeys(changed, "modified"),
        **dict.fromkeys(removed, "removed"),
        **dict.fromkeys(added, "added"),
    }
    assert kinds(root, listing) == expected
