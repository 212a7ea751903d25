"""The shared stamper's stream: lines stamped at arrival in the format `logs.parse` reads, a line
waiting for its newline, a very long one cut at PARTIAL_CAP, the last one written at EOF."""

from __future__ import annotations

import os
from pathlib import Path

from herdsman import logs
from herdsman.drivers import stamper, stamper_stream


def test_lines_wait_for_their_newline_and_a_long_one_is_cut(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    log = tmp_path / "i.log"
    stream = stamper_stream.Stream("i", read_end, str(log))
    stream.feed(b"one\ntw", 1.5)
    assert log.read_bytes().count(b"\n") == 1, "the partial line waits"
    stream.feed(b"o\n", 2.25)
    stream.feed(b"x" * (stamper_stream.PARTIAL_CAP + 10), 3.0)
    stream.feed(b"y", 3.5)
    stream.close(4.0)  # EOF: the last unterminated line is written as a line
    os.close(write_end)
    lines = [logs.parse(raw, "i", 0.0) for raw in log.read_text().splitlines()]
    assert [line.text for line in lines] == ["one", "two", "x" * stamper_stream.PARTIAL_CAP, "x" * 10 + "y"]
    assert [line.at for line in lines] == [1.5, 2.25, 3.0, 4.0]
    assert stamper_stream.stamp(1.5) == b"1970-01-01T00:00:01.500000Z "


def test_a_reused_id_gets_its_own_stream_and_the_old_eof_leaves_the_new_fifo(tmp_path: Path) -> None:
    """Migrate ids are fixed: a new FIFO under the id of a stream still open is read too (keyed on
    the FIFO's inode, not the id), and the old stream's EOF removes only its own FIFO."""
    run = tmp_path / "run"
    stamping = stamper.Stamper(str(run))
    fifo = run / "logpipes" / "x"
    ends = []
    for n in (1, 2):
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo, 0o600)
        writer = os.open(fifo, os.O_RDWR)
        reader = stamper_stream.open_fifo(str(fifo))
        stamping.add("x", reader, str(tmp_path / f"{n}.log"), remember=False)
        ends.append((reader, writer))
    assert len(stamping.streams) == 2
    stamping.add("x", os.dup(ends[1][0]), str(tmp_path / "3.log"), remember=False)
    assert len(stamping.streams) == 2, "the very same FIFO handed again is not read twice"

    os.write(ends[1][1], b"new\n")
    stamping.drain(stamping.streams[ends[1][0]])
    os.close(ends[0][1])  # the old instance is gone: EOF of the old stream
    stamping.drain(stamping.streams[ends[0][0]])
    assert list(stamping.streams) == [ends[1][0]]
    assert fifo.is_fifo(), "the new FIFO stays"
    assert (tmp_path / "2.log").read_text().endswith(" new\n")
    os.close(ends[1][1])
    stamping.drain(stamping.streams[ends[1][0]])
    assert not fifo.exists() and stamping.streams == {}
