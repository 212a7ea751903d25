"""Unpacking images and layers: OCI whiteouts, atomicity, digests, and every archive trick refused."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from herdsman.errors import BakeError
from herdsman.image.oci import (
    DOCKER_LAYER_GZIP,
    MEDIA_CONFIG,
    MEDIA_LAYER_GZIP,
    MEDIA_LAYER_TAR,
    MEDIA_MANIFEST,
    Descriptor,
    ImageStore,
)
from herdsman.image.tarball import Entry, write_layer
from herdsman.image.unpack import unpack_image, unpack_layer

MTIME = 1_700_000_000
Member = tuple[tarfile.TarInfo, bytes | None]


def _info(name: str, kind: bytes, mode: int, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = MTIME
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def F(name: str, data: bytes = b"data", mode: int = 0o644, **attrs: object) -> Member:
    info = _info(name, tarfile.REGTYPE, mode, **attrs)
    info.size = len(data)
    return info, data


def D(name: str, mode: int = 0o755, **attrs: object) -> Member:
    return _info(name, tarfile.DIRTYPE, mode, **attrs), None


def S(name: str, target: str) -> Member:
    return _info(name, tarfile.SYMTYPE, 0o777, linkname=target), None


def H(name: str, target: str) -> Member:
    return _info(name, tarfile.LNKTYPE, 0o644, linkname=target), None


def tar_bytes(members: list[Member], *, gz: bool = True) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue(), mtime=0) if gz else raw.getvalue()


def snapshot(base: Path, skip: Path) -> dict[str, tuple[int, int, int]]:
    """Everything under ``base`` except ``skip``: path -> (mode, size, mtime_ns)."""
    found: dict[str, tuple[int, int, int]] = {}
    for top, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if Path(top, d) != skip]
        for name in dirnames + filenames:
            info = os.lstat(Path(top, name))
            found[str(Path(top, name).relative_to(base))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the unpack destination, holding a file an attacker would love to touch."""
    place = tmp_path / "outside"
    place.mkdir()
    (place / "victim").write_bytes(b"precious")
    return place


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


def apply(tmp_path: Path, dest: Path, members: list[Member], *, gz: bool = True) -> None:
    blob = tmp_path / f"layer-{len(list(tmp_path.glob('layer-*')))}"
    blob.write_bytes(tar_bytes(members, gz=gz))
    unpack_layer(blob, MEDIA_LAYER_GZIP if gz else MEDIA_LAYER_TAR, dest)


def image(store: ImageStore, layers: list[Descriptor]) -> str:
    config = store.write_json({"architecture": "amd64", "os": "linux"}, MEDIA_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return store.write_json(manifest, MEDIA_MANIFEST).digest


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".partial-" in p.name]


# --- refused archives ------------------------------------------------------------------------------

REFUSED: dict[str, tuple[Callable[[Path], list[Member]], str, str]] = {
    # id: (members, given the outside dir; the member named in the error ({o}: outside); words in it)
    "dotdot": (lambda o: [F("../evil")], "../evil", "'..'"),
    "absolute": (lambda o: [F("/abs/path")], "/abs/path", "absolute"),
    "absolute-host": (lambda o: [F(f"{o}/victim")], "{o}/victim", "absolute"),
    "inner-dotdot": (lambda o: [D("a"), F("a/../../x")], "a/../../x", "'..'"),
    "dot-slash-dotdot": (lambda o: [F("./../x")], "./../x", "'..'"),
    "symlink-loop": (lambda o: [S("l1", "l2"), S("l2", "l1"), F("l1/x")], "l1/x", "too many levels"),
    "parent-is-a-file": (lambda o: [F("f"), F("f/x")], "f/x", "not a directory"),
    "hardlink-absolute": (lambda o: [H("x", "/etc/passwd")], "x", "absolute"),
    "hardlink-host-file": (lambda o: [H("x", str(o / "victim"))], "x", "absolute"),
    "hardlink-dotdot": (lambda o: [H("x", "../x")], "x", "'..'"),
    "hardlink-dotdot-outside": (lambda o: [H("x", "../outside/victim")], "x", "'..'"),
    "hardlink-not-yet-extracted": (lambda o: [H("x", "later"), F("later")], "x", "not an extracted file"),
    "hardlink-to-directory": (lambda o: [D("d"), H("x", "d")], "x", "not an extracted file"),
    # "up/victim" is "/victim" inside the image (as in a chroot), which this layer never wrote
    "hardlink-through-escaping-link": (
        lambda o: [S("up", "/.."), H("x", "up/victim")],
        "x",
        "not an extracted file",
    ),
    "nul-in-name": (lambda o: [F("a" * 120 + "\0b")], "a" * 80, "NUL byte"),
    "huge-name": (lambda o: [F("d/" * 2100 + "x")], "d/" * 40, "at most 4096"),
    "huge-component": (lambda o: [F("x" * 300)], "x" * 80, "at most 255"),
    "huge-link-target": (lambda o: [S("l", "t/" * 2100)], "l", "link target of 4200 bytes"),
    "empty-link-target": (lambda o: [S("l", "")], "l", "empty target"),
    "char-device": (
        lambda o: [(_info("dev/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3), None)],
        "dev/null",
        "device nodes are not allowed in images",
    ),
    "block-device": (
        lambda o: [(_info("sda", tarfile.BLKTYPE, 0o660, devmajor=8, devminor=0), None)],
        "sda",
        "device nodes are not allowed in images",
    ),
    "fifo": (
        lambda o: [(_info("pipe", tarfile.FIFOTYPE, 0o644), None)],
        "pipe",
        "device nodes are not allowed in images",
    ),
    "whiteout-of-parent": (lambda o: [F(".wh...")], ".wh...", "whiteout"),
    "whiteout-of-parent-nested": (lambda o: [D("sub"), F("sub/.wh...")], "sub/.wh...", "whiteout"),
    "whiteout-of-nothing": (lambda o: [F("sub/.wh.")], "sub/.wh.", "whiteout"),
    "root-as-symlink": (lambda o: [S("./", "/")], "./", "image root"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unsafe_layer_is_refused_and_nothing_is_written_outside(
    case: str, tmp_path: Path, dest: Path, outside: Path
) -> None:
    members, bad, words = REFUSED[case]
    blob = tmp_path / "evil-layer.tar.gz"
    blob.write_bytes(tar_bytes(members(outside)))
    before = snapshot(tmp_path, dest)
    with pytest.raises(BakeError) as err:
        unpack_layer(blob, MEDIA_LAYER_GZIP, dest)
    message = str(err.value)
    assert "evil-layer.tar.gz" in message
    shown = bad.format(o=outside)
    assert (repr(shown) if len(shown) < 80 else repr(shown)[:-1]) in message
    assert len(message) < 400 and "\n" not in message  # one line, a hostile name cut short
    assert words in message
    assert snapshot(tmp_path, dest) == before
    assert (outside / "victim").read_bytes() == b"precious"


def test_refusal_inside_an_image_names_the_layer_digest_and_leaves_no_trace(
    tmp_path: Path, outside: Path
) -> None:
    store = ImageStore(tmp_path / "store")
    # the good layer has a read-only directory, which must not stop the clean-up when unprivileged
    good = store.write_blob(
        tar_bytes([D("ro", mode=0o555), D("ro/sub", mode=0o500), F("ro/sub/f")]), MEDIA_LAYER_GZIP
    )
    evil = store.write_blob(tar_bytes([F("../outside/victim", b"pwned")]), MEDIA_LAYER_GZIP)
    digest = image(store, [good, evil])
    target = tmp_path / "unpacked" / digest.removeprefix("sha256:")
    target.parent.mkdir()
    before = snapshot(tmp_path, target.parent)
    with pytest.raises(BakeError, match=evil.digest):
        unpack_image(store, digest, target)
    assert os.listdir(target.parent) == []  # no image, no partial directory
    assert snapshot(tmp_path, target.parent) == before
    assert (outside / "victim").read_bytes() == b"precious"


# --- symlinks are resolved inside the image, never on the host ---------------------------------------


def test_member_under_a_link_to_root_lands_inside_dest(tmp_path: Path, dest: Path, outside: Path) -> None:
    # On the host, link/<outside>/victim would be the victim file; inside the image it is a new file.
    inner = str(outside / "victim").lstrip("/")
    apply(tmp_path, dest, [S("link", "/"), F(f"link/{inner}", b"pwned")])
    assert (outside / "victim").read_bytes() == b"precious"
    assert (dest / inner).read_bytes() == b"pwned"
    assert os.readlink(dest / "link") == "/"


def test_absolute_symlink_is_kept_and_never_followed(tmp_path: Path, dest: Path, outside: Path) -> None:
    apply(
        tmp_path,
        dest,
        [
            S("usr/bin/awk", "/etc/alternatives/awk"),
            S("victim", str(outside / "victim")),
            S("dir", str(outside)),
        ],
    )
    assert os.readlink(dest / "usr" / "bin" / "awk") == "/etc/alternatives/awk"
    assert os.readlink(dest / "victim") == str(outside / "victim")
    # a later layer writes at the link (replacing it) and below it (inside the image)
    apply(tmp_path, dest, [F("victim", b"pwned"), F("dir/victim", b"pwned"), F("dir/new", b"x")])
    assert (outside / "victim").read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert not (dest / "victim").is_symlink()
    assert (dest / "victim").read_bytes() == b"pwned"
    inner = dest / str(outside).lstrip("/")
    assert (inner / "victim").read_bytes() == b"pwned"
    assert (inner / "new").read_bytes() == b"x"


CONTAINED: dict[str, tuple[list[Member], str, str]] = {
    # id: (members, where the last member lands, relative to the root)
    "relative-escape": ([S("a", "../../etc"), F("a/passwd", b"x")], "etc/passwd", "a"),
    "nested-escape": ([D("d"), S("d/l", "../../x"), D("x"), F("d/l/f", b"x")], "x/f", "d/l"),
    "to-outside": ([S("o", "../outside"), F("o/victim", b"x")], "outside/victim", "o"),
    "dotdot-inside": ([S("a", "b/../../x"), F("a/f", b"x")], "x/f", "a"),
    "absolute-dotdot": ([S("up", "/.."), F("up/evil", b"x")], "evil", "up"),
    "chain": (
        # each link is harmless on its own (lexically inside the root), together they climb "out"
        [D("t"), D("a"), D("a/b"), S("a/b/L", "../../t"), S("a/b/M", "L/../../.."), F("a/b/M/x", b"x")],
        "x",
        "a/b/M",
    ),
}


@pytest.mark.parametrize("case", sorted(CONTAINED))
def test_escaping_symlinks_are_kept_and_resolved_inside_the_root_as_in_a_chroot(
    case: str, tmp_path: Path, dest: Path, outside: Path
) -> None:
    members, lands, link = CONTAINED[case]
    before = snapshot(tmp_path, dest)
    apply(tmp_path, dest, members)
    assert (dest / lands).read_bytes() == b"x"
    assert os.path.islink(dest / link)
    assert {k: v for k, v in snapshot(tmp_path, dest).items() if not k.startswith("layer-")} == {
        k: v for k, v in before.items() if not k.startswith("layer-")
    }
    assert (outside / "victim").read_bytes() == b"precious"


def test_relative_symlinks_inside_the_root_are_followed_in_the_image(tmp_path: Path, dest: Path) -> None:
    apply(tmp_path, dest, [D("usr"), D("usr/lib"), S("lib", "usr/lib"), S("usr/lib/self", "../../usr")])
    apply(tmp_path, dest, [F("lib/libc.so", b"elf"), F("usr/lib/self/lib/x", b"y")])
    assert (dest / "usr" / "lib" / "libc.so").read_bytes() == b"elf"
    assert (dest / "usr" / "lib" / "x").read_bytes() == b"y"
    assert (dest / "lib").is_symlink()


# --- layers and whiteouts ---------------------------------------------------------------------------


def test_multi_layer_image(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    lower = write_layer(
        store,
        [
            Entry("app/main.py", "file", data=b"print(1)\n"),
            Entry("app/run", "file", executable=True, data=b"#!/bin/sh\n"),
            Entry("etc/config", "file", data=b"v1"),
            Entry("usr/bin/tool", "file", executable=True, data=b"tool"),
            Entry("bin", "symlink", target="usr/bin"),
        ],
        mtime=MTIME,
    )
    upper = write_layer(
        store,
        [Entry("etc/config", "file", data=b"v2"), Entry("app/extra.txt", "file", data=b"x")],
        mtime=MTIME,
    )
    digest = image(store, [lower.descriptor, upper.descriptor])
    target = tmp_path / "unpacked" / "img"
    unpack_image(store, digest, target)
    assert (target / "app" / "main.py").read_bytes() == b"print(1)\n"
    assert (target / "app" / "extra.txt").read_bytes() == b"x"
    assert (target / "etc" / "config").read_bytes() == b"v2"
    assert stat.S_IMODE((target / "app" / "run").stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "etc" / "config").stat().st_mode) == 0o644
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert os.readlink(target / "bin") == "usr/bin"
    assert (target / "bin" / "tool").read_bytes() == b"tool"
    assert (target / "app" / "main.py").stat().st_mtime == MTIME
    assert (target / "app").stat().st_mtime == MTIME
    assert leftovers(target.parent) == []


def test_existing_destination_is_left_alone(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    layer = write_layer(store, [Entry("f", "file", data=b"new")])
    target = tmp_path / "img"
    target.mkdir()
    (target / "marker").write_text("already unpacked")
    unpack_image(store, image(store, [layer.descriptor]), target)
    assert sorted(p.name for p in target.iterdir()) == ["marker"]


def test_whiteout_deletes_from_lower_layers(tmp_path: Path, dest: Path) -> None:
    apply(tmp_path, dest, [D("a"), F("a/keep"), F("a/gone"), D("d"), D("d/sub"), F("d/sub/x"), S("l", "a")])
    apply(tmp_path, dest, [F("a/.wh.gone"), F(".wh.d"), F("./.wh.l"), F(".wh.never-there")])
    assert sorted(os.listdir(dest)) == ["a"]
    assert sorted(os.listdir(dest / "a")) == ["keep"]


def test_whiteout_does_not_delete_what_its_own_layer_wrote(tmp_path: Path, dest: Path) -> None:
    apply(tmp_path, dest, [F("x", b"lower")])
    apply(tmp_path, dest, [F("x", b"same layer"), F(".wh.x")])
    assert (dest / "x").read_bytes() == b"same layer"


def test_opaque_whiteout_empties_a_directory_of_lower_content(tmp_path: Path, dest: Path) -> None:
    apply(tmp_path, dest, [D("d"), F("d/old"), D("d/sub"), F("d/sub/old"), F("other")])
    apply(tmp_path, dest, [D("d"), F("d/early"), D("d/sub"), F("d/.wh..wh..opq"), F("d/late")])
    assert sorted(os.listdir(dest / "d")) == ["early", "late", "sub"]
    assert os.listdir(dest / "d" / "sub") == []
    assert (dest / "other").exists()
    assert not (dest / "d" / ".wh..wh..opq").exists()


def test_later_layer_replaces_files_links_and_directories(tmp_path: Path, dest: Path) -> None:
    apply(tmp_path, dest, [F("f", b"old"), S("l", "f"), D("d"), F("d/x"), F("g")])
    apply(tmp_path, dest, [D("f"), F("l", b"now a file"), F("d", b"now a file too"), S("g", "/etc/hostname")])
    assert (dest / "f").is_dir()
    assert not (dest / "l").is_symlink() and (dest / "l").read_bytes() == b"now a file"
    assert (dest / "d").read_bytes() == b"now a file too"
    assert os.readlink(dest / "g") == "/etc/hostname"


def test_hard_links_within_the_image(tmp_path: Path, dest: Path) -> None:
    apply(tmp_path, dest, [F("./bin/python3.11", b"elf"), H("./bin/python3", "./bin/python3.11")])
    apply(tmp_path, dest, [H("bin/python", "bin/python3.11")])  # to a file of a lower layer
    first = (dest / "bin" / "python3.11").stat()
    assert first.st_ino == (dest / "bin" / "python3").stat().st_ino == (dest / "bin" / "python").stat().st_ino
    assert first.st_nlink == 3
    # replacing one name later never writes through to the others
    apply(tmp_path, dest, [F("bin/python", b"other")])
    assert (dest / "bin" / "python3.11").read_bytes() == b"elf"


def test_uncompressed_tar_layer(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    plain = store.write_blob(tar_bytes([D("./"), D("./etc"), F("./etc/hostname", b"box\n")], gz=False), "x")
    plain = Descriptor(MEDIA_LAYER_TAR, plain.digest, plain.size)
    docker = store.write_blob(tar_bytes([F("etc/motd", b"hi")]), DOCKER_LAYER_GZIP)
    target = tmp_path / "img"
    unpack_image(store, image(store, [plain, docker]), target)
    assert (target / "etc" / "hostname").read_bytes() == b"box\n"
    assert (target / "etc" / "motd").read_bytes() == b"hi"


def test_modes_owners_and_mtimes_come_from_the_tar(tmp_path: Path, dest: Path) -> None:
    apply(
        tmp_path,
        dest,
        [
            D("./", mode=0o750),
            D("secret", mode=0o700, mtime=1000),
            F("secret/key", mode=0o600, uid=1234, gid=5678, mtime=2000),
            F("bin/su", mode=0o4755),
            S("secret/link", "key"),
        ],
    )
    assert stat.S_IMODE(dest.stat().st_mode) == 0o750
    assert stat.S_IMODE((dest / "secret").stat().st_mode) == 0o700
    assert (dest / "secret").stat().st_mtime == 1000  # set after its children were written
    key = (dest / "secret" / "key").stat()
    assert (stat.S_IMODE(key.st_mode), key.st_mtime) == (0o600, 2000)
    assert stat.S_IMODE((dest / "bin" / "su").stat().st_mode) == 0o4755
    assert os.lstat(dest / "secret" / "link").st_mtime == MTIME
    if os.geteuid() == 0:
        assert (key.st_uid, key.st_gid) == (1234, 5678)


def test_read_only_directories_when_unprivileged(
    tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    apply(tmp_path, dest, [D("ro", mode=0o555), F("ro/a"), D("ro/inner", mode=0o500), F("ro/inner/b")])
    assert stat.S_IMODE((dest / "ro").stat().st_mode) == 0o555
    apply(tmp_path, dest, [F("ro/c"), F("ro/inner/.wh.b"), F("ro/.wh.a")])
    assert sorted(os.listdir(dest / "ro")) == ["c", "inner"]
    assert stat.S_IMODE((dest / "ro").stat().st_mode) == 0o555
    assert stat.S_IMODE((dest / "ro" / "inner").stat().st_mode) == 0o500


# --- atomicity and integrity ------------------------------------------------------------------------


@pytest.mark.parametrize("replacement", ["another-layer", "garbage", "truncated"])
def test_tampered_blob_is_refused(tmp_path: Path, replacement: str) -> None:
    store = ImageStore(tmp_path / "store")
    layer = write_layer(store, [Entry("app/main.py", "file", data=b"print(1)\n")])
    blob = store.blob_path(layer.descriptor.digest)
    original = blob.read_bytes()
    tampered = {
        "another-layer": tar_bytes([F("app/main.py", b"print('pwned')\n")]),
        "garbage": b"not a gzip stream at all",
        "truncated": original[: len(original) // 2],
    }[replacement]
    os.chmod(blob, 0o644)
    blob.write_bytes(tampered)
    target = tmp_path / "unpacked" / "img"
    with pytest.raises(BakeError, match="corrupt") as err:
        unpack_image(store, image(store, [layer.descriptor]), target)
    assert layer.descriptor.digest in str(err.value)
    assert not target.exists()
    assert leftovers(target.parent) == []


def test_missing_blob_and_unsupported_media_type(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    layer = write_layer(store, [Entry("f", "file", data=b"x")]).descriptor
    zstd = Descriptor("application/vnd.oci.image.layer.v1.tar+zstd", layer.digest, layer.size)
    target = tmp_path / "unpacked" / "img"
    with pytest.raises(BakeError, match="unsupported media type"):
        unpack_image(store, image(store, [zstd]), target)
    store.blob_path(layer.digest).unlink()
    with pytest.raises(BakeError, match="cannot read layer"):
        unpack_image(store, image(store, [layer]), target)
    assert not target.exists()
    assert leftovers(target.parent) == []


def test_manifest_without_layers_is_refused(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    digest = store.write_json({"schemaVersion": 2, "manifests": []}, MEDIA_MANIFEST).digest
    with pytest.raises(BakeError, match="not an image manifest"):
        unpack_image(store, digest, tmp_path / "img")
    assert not (tmp_path / "img").exists()
