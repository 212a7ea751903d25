"""The router's HTTP pieces, pure: heads parsed once into what a proxy acts on, hop-by-hop lines
cut out of the original bytes, and a framer that finds a body's end however the bytes arrive."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herdsman.router.http import CHUNKED, LENGTH, UNTIL_CLOSE, BadMessage, Framer, parse_head


def test_head_notes_framing_options_host_and_expect() -> None:
    head = parse_head(
        b"POST /x HTTP/1.1\r\nHost: Web.Example:8080\r\nContent-Length: 12\r\n"
        b"Connection: Keep-Alive\r\nExpect: 100-continue\r\nX-Thing: a:b"
    )
    assert head.start == b"POST /x HTTP/1.1"
    assert head.length == 12 and not head.chunked and not head.encoded
    assert head.tokens == {b"keep-alive"}
    assert head.host == b"web.example:8080", "lower case, as routes match it"
    assert head.expect is not None
    assert head.get(b"x-thing") == b"a:b"


def test_chunked_is_the_last_coding() -> None:
    assert parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked").chunked
    gzip_only = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip")
    assert gzip_only.encoded and not gzip_only.chunked


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost : x",  # space before the colon (smuggling)
        b"GET / HTTP/1.1\r\nno colon here",
        b"GET / HTTP/1.1\r\nX: a\r\n folded",  # obs-fold
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2",
        b"GET / HTTP/1.1\r\nContent-Length: -1",
        b"",
    ],
)
def test_bad_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(BadMessage):
        parse_head(raw)


def test_encode_cuts_hop_by_hop_lines_and_the_headers_connection_names() -> None:
    head = parse_head(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\n"
        b"X-Secret: s\r\nTE: trailers\r\nUpgrade: h2c\r\nAccept: */*"
    )
    out = head.encode(b"\r\nX-Forwarded-For: 127.0.0.1")
    assert out == b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n"


def test_encode_keeps_everything_else_byte_for_byte() -> None:
    raw = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\nConnection: keep-alive\r\nX-A: 1"
    assert parse_head(raw).encode() == (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\nX-A: 1\r\n\r\n"
    )
    plain = b"GET / HTTP/1.1\r\nHost: h"
    assert parse_head(plain).encode() == plain + b"\r\n\r\n"


def test_encode_drops_expect_only_when_asked() -> None:
    head = parse_head(b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1")
    assert b"Expect" not in head.encode(drop_expect=True)
    assert b"Expect" in head.encode()


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
