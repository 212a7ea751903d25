"""The reproducible tar writer and the OCI store, on their own."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.errors import BakeError
from herdsman.image.oci import MEDIA_MANIFEST, REF_NAME, Descriptor, ImageStore, canonical_json
from herdsman.image.tarball import Entry, normalise, with_parents, write_layer

names = st.text(alphabet="abcxyz-_.0", min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))
paths = st.lists(names, min_size=1, max_size=4).map("/".join)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(paths, st.binary(max_size=64), st.booleans()), max_size=12, unique_by=lambda t: t[0])
)
def test_layer_bytes_do_not_depend_on_entry_order(tmp_path_factory: pytest.TempPathFactory, files) -> None:  # type: ignore[no-untyped-def]
    # a path cannot be both a file and a parent directory of another file
    chosen = [f for f in files if not any(o[0].startswith(f[0] + "/") for o in files)]
    store = ImageStore(tmp_path_factory.mktemp("store"))
    entries = [Entry(p, "file", executable=x, data=d) for p, d, x in chosen]
    forward = write_layer(store, entries)
    backward = write_layer(store, list(reversed(entries)))
    assert forward == backward
    with tarfile.open(store.blob_path(forward.descriptor.digest)) as tar:
        members = tar.getmembers()
    seen: set[str] = set()
    for member in members:
        parent = member.name.rpartition("/")[0]
        assert not parent or parent in seen, "parents come first"
        seen.add(member.name)
        assert member.mtime == 0 and member.uid == 0 and member.uname == ""
        assert member.mode in (0o644, 0o755)


def test_with_parents_adds_every_directory_once_in_order() -> None:
    entries = with_parents([Entry("a/b/c.txt", "file", data=b""), Entry("a/d", "file", data=b"")])
    assert [(e.path, e.kind) for e in entries] == [
        ("a", "dir"),
        ("a/b", "dir"),
        ("a/b/c.txt", "file"),
        ("a/d", "file"),
    ]


@pytest.mark.parametrize("bad", ["../x", "a/../../b", "", ".", "/"])
def test_normalise_refuses_paths_outside_the_root(bad: str) -> None:
    with pytest.raises(ValueError):
        normalise(bad)


def test_normalise_strips_leading_slash_and_dots() -> None:
    assert normalise("/app/./x.py") == "app/x.py"


def test_gzip_header_is_fixed(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    layer = write_layer(store, [Entry("x", "file", data=b"1")])
    blob = store.blob_path(layer.descriptor.digest).read_bytes()
    assert blob[:3] == b"\x1f\x8b\x08" and blob[4:8] == b"\0\0\0\0" and blob[9] == 255
    assert gzip.decompress(blob)[:1] == b"x"


def test_store_index_and_lookup(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    blob = store.write_json({"a": 1}, MEDIA_MANIFEST)
    assert store.read_blob(blob.digest) == canonical_json({"a": 1}) == b'{"a":1}'
    named = Descriptor(MEDIA_MANIFEST, blob.digest, blob.size, {REF_NAME: "x/web:1"})
    store.add_to_index(named)
    store.add_to_index(named)
    assert store.index() == [named]
    assert store.find(blob.digest[7:19]) == named
    assert store.find("x/web:1") == named
    with pytest.raises(BakeError, match="no image 'nope'") as info:
        store.find("nope")
    assert "herd images" in info.value.hint
    with pytest.raises(BakeError):
        store.blob_path("md5:abc")
    assert (tmp_path / "oci-layout").read_text() == '{"imageLayoutVersion":"1.0.0"}'
