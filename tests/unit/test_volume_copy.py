"""Snapshots of a live volume: the serving release writes while a deploy copies its volume.

A real writer thread does what apps do (write a temporary file, rename it over the real one), as
fast as it can, while snapshots are taken; every snapshot must succeed and hold a whole file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from herdsman.deploy.volumes import restore, snapshot


def test_a_snapshot_of_a_volume_being_written_succeeds_and_holds_whole_files(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "visits").write_text("0")
    (volume / "nested").mkdir()
    (volume / "nested" / "kept").write_text("kept")
    stop = threading.Event()
    writes = 0

    def write() -> None:
        nonlocal writes
        while not stop.is_set():
            for n in range(20):  # several temporaries alive at once, each renamed away
                temporary = volume / f".visits.{writes}.{n}"
                temporary.write_text(str(writes))
                os.rename(temporary, volume / "visits")
            writes += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for n in range(200):
            dest = snapshot(volume, tmp_path / "snapshots" / str(n))
            assert (dest / "visits").read_text().isdigit()
            assert (dest / "nested" / "kept").read_text() == "kept"
    finally:
        stop.set()
        writer.join(timeout=10)
    assert writes > 0
    restored = tmp_path / "restored"
    restore(tmp_path / "snapshots" / "199", restored)
    assert (restored / "visits").read_text().isdigit()
