"""The router's response-side HTTP, pure: a head noted once for what a proxy acts on, hop-by-hop
lines cut out of the original bytes, and a framer that finds a body's end however the bytes
arrive. (Requests are llhttp's, through httptools: tests/integration/test_router_http.py.)"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herdsman.router.http import CHUNKED, LENGTH, UNTIL_CLOSE, BadMessage, Framer, Head, status_of


def test_head_notes_framing_and_options() -> None:
    head = Head(
        b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: Keep-Alive\r\nX-Thing: a:b\r\nServer: s"
    )
    assert head.start == b"HTTP/1.1 200 OK" and status_of(head) == 200
    assert head.length == 12 and not head.chunked
    assert head.tokens == {b"keep-alive"}
    assert head.get(b"x-thing") == b"a:b"


def test_chunked_is_the_last_coding() -> None:
    assert Head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked").chunked
    assert not Head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip").chunked


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1x",
    ],
)
def test_unframeable_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(BadMessage):
        Head(raw)


def test_a_bad_status_line_is_refused() -> None:
    with pytest.raises(BadMessage):
        status_of(Head(b"HTTP/1.1 OK\r\nServer: s"))


def test_encode_cuts_hop_by_hop_lines_and_the_headers_connection_names() -> None:
    head = Head(
        b"HTTP/1.1 200 OK\r\nServer: h\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\n"
        b"X-Secret: s\r\nTrailer: X-Sum\r\nUpgrade: h2c\r\nAccept-Ranges: none"
    )
    assert (
        head.encode(b"\r\nX-Via: r")
        == b"HTTP/1.1 200 OK\r\nServer: h\r\nAccept-Ranges: none\r\nX-Via: r\r\n\r\n"
    )


def test_encode_keeps_everything_else_byte_for_byte() -> None:
    raw = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\nConnection: keep-alive\r\nX-A: 1"
    assert Head(raw).encode() == b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\nX-A: 1\r\n\r\n"
    plain = b"HTTP/1.1 204 No Content\r\nServer: h"
    assert Head(plain).encode() == plain + b"\r\n\r\n"


def chunked(body: bytes, sizes: list[int], trailers: bytes) -> bytes:
    out, pos = [], 0
    for size in sizes:
        piece = body[pos : pos + size]
        if not piece:
            break
        out.append(b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n")
        pos += len(piece)
    if pos < len(body):
        out.append(b"%X\r\n" % (len(body) - pos) + body[pos:] + b"\r\n")
    out.append(b"0\r\n" + trailers + b"\r\n")
    return b"".join(out)


def feed_in_pieces(framer: Framer, data: bytes, cuts: list[int]) -> int:
    """Feed ``data`` cut at ``cuts``; return how many bytes the framer took as body."""
    taken, pos = 0, 0
    for cut in [*sorted(set(cuts)), len(data)]:
        piece = data[pos:cut]
        pos = max(pos, cut)
        if not piece or framer.done:
            continue
        used = framer.feed(piece)
        taken += used
        if used < len(piece):
            break
    return taken


@given(
    body=st.binary(max_size=3000),
    sizes=st.lists(st.integers(1, 700), max_size=8),
    trailers=st.sampled_from([b"", b"X-Sum: 1\r\n", b"A: 1\r\nB: 2\r\n"]),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    after=st.binary(max_size=40),
)
def test_chunked_framer_finds_the_end_wherever_the_bytes_are_cut(
    body: bytes, sizes: list[int], trailers: bytes, cuts: list[int], after: bytes
) -> None:
    encoded = chunked(body, sizes, trailers)
    framer = Framer(CHUNKED)
    assert feed_in_pieces(framer, encoded + after, cuts) == len(encoded)
    assert framer.done


@given(length=st.integers(0, 5000), cuts=st.lists(st.integers(0, 6000), max_size=10))
def test_length_framer_takes_exactly_the_length(length: int, cuts: list[int]) -> None:
    framer = Framer(LENGTH, length)
    assert feed_in_pieces(framer, b"x" * length + b"NEXT", cuts) == length
    assert framer.done


def test_until_close_framer_takes_everything_and_is_never_done() -> None:
    framer = Framer(UNTIL_CLOSE)
    assert framer.feed(b"abc") == 3 and not framer.done


@pytest.mark.parametrize("data", [b"zz\r\n", b"-1\r\n", b"1" * 5000])
def test_bad_chunk_sizes_are_refused(data: bytes) -> None:
    with pytest.raises(BadMessage):
        Framer(CHUNKED).feed(data)
