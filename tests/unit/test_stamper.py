"""The shared stamper's stream: lines stamped at arrival in the format `logs.parse` reads, a line
waiting for its newline, a very long one cut at PARTIAL_CAP, the last one written at EOF."""

from __future__ import annotations

import os
from pathlib import Path

from herdsman import logs
from herdsman.drivers import stamper


def test_lines_wait_for_their_newline_and_a_long_one_is_cut(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    log = tmp_path / "i.log"
    stream = stamper.Stream("i", read_end, str(log))
    stream.feed(b"one\ntw", 1.5)
    assert log.read_bytes().count(b"\n") == 1, "the partial line waits"
    stream.feed(b"o\n", 2.25)
    stream.feed(b"x" * (stamper.PARTIAL_CAP + 10), 3.0)
    stream.feed(b"y", 3.5)
    stream.close(4.0)  # EOF: the last unterminated line is written as a line
    os.close(write_end)
    lines = [logs.parse(raw, "i", 0.0) for raw in log.read_text().splitlines()]
    assert [line.text for line in lines] == ["one", "two", "x" * stamper.PARTIAL_CAP, "x" * 10 + "y"]
    assert [line.at for line in lines] == [1.5, 2.25, 3.0, 4.0]
    assert stamper.stamp(1.5) == b"1970-01-01T00:00:01.500000Z "
