"""Micro-benchmark: turning a request head into the head sent to the backend, two ways.

- httptools: what `router/inbound.py` does — the real `ClientConnection`'s parser callbacks
  (llhttp through httptools) build the backend's head and the request's `Exchange`;
- regex scan: the same work in Python — header lines checked by a regex, `router/http.Head` (one
  regex pass over the lower-cased bytes, hop-by-hop lines cut out, what `router/upstream.py` does
  for responses), Host and Expect found, the `Exchange` made.

The router's requests go through httptools because of this measurement (and because a client's
bytes are untrusted: llhttp is strict). Per head, best of 5; no sockets involved.

    .venv/bin/python bench/head_parse.py
"""

from __future__ import annotations

import asyncio
import platform
import re
import timeit

from herdsman.router.exchange import Exchange
from herdsman.router.http import Head
from herdsman.router.inbound import ClientConnection
from herdsman.router.proxy import Router

HEADS = {
    "wrk (1 header)": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18081\r\n\r\n",
    "browser (9 headers)": (
        b"GET /index.html HTTP/1.1\r\nHost: example.localhost\r\nUser-Agent: Mozilla/5.0 (X11; Linux)\r\n"
        b"Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\n"
        b"Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nCookie: session=abcdef0123456789\r\n"
        b"Upgrade-Insecure-Requests: 1\r\n\r\n"
    ),
}
EXTRA = b"\r\nX-Forwarded-For: 127.0.0.1\r\nConnection: keep-alive"
HEADER_LINES = re.compile(rb"(?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\r\n]*)*")  # token ":" value


class Transport(asyncio.Transport):
    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default


def main() -> None:
    connection = ClientConnection(Router(), "127.0.0.1:1")
    connection.connection_made(Transport())

    def with_httptools(data: bytes) -> bytes:
        connection.parser.feed_data(data)  # the callbacks only: no backend is chosen
        return connection.queue.pop().request

    def with_regex_scan(data: bytes) -> bytes:
        """The same work without httptools: the header lines checked (no space before a colon, no
        obs-fold), the head noted and re-encoded, Host and Expect found, the Exchange made."""
        end = data.find(b"\r\n\r\n")
        raw = data[:end]
        first = raw.find(b"\r\n")
        if HEADER_LINES.fullmatch(raw, first) is None:
            raise ValueError("bad header line")
        head = Head(raw)
        start = head.start
        method = start[: start.find(b" ")]
        host = head.get(b"host")
        _expect = head.get(b"expect")
        keep = start.endswith(b"HTTP/1.1") and b"close" not in head.tokens
        return Exchange(connection, head.encode(EXTRA), method, host, keep, False).request

    print(f"machine: {platform.machine()}, Python {platform.python_version()}")
    print("| request head | httptools | regex scan | httptools / regex |")
    print("| --- | ---: | ---: | ---: |")
    for name, data in HEADS.items():
        assert with_httptools(data) == with_regex_scan(data), "both give the backend the same head"
        times = []
        for parse in (with_httptools, with_regex_scan):
            best = min(timeit.repeat(lambda p=parse, d=data: p(d), number=100_000, repeat=5))  # type: ignore[misc]
            times.append(best / 100_000 * 1e6)
        print(f"| {name} | {times[0]:.2f} us | {times[1]:.2f} us | {times[0] / times[1]:.2f} |")


if __name__ == "__main__":
    main()
