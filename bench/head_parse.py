"""Micro-benchmark: parsing one request head, the router's Python split against httptools.

The issue names httptools for the router's hot path. Used as a *head parser* inside the current
stream-based data plane (read the head, then parse it), it would replace `router.http.read_head`'s
split; this measures whether that alone pays. (httptools' real value is in a Protocol-based data
plane fed straight from `data_received`, without asyncio streams — not measured here.)

    .venv/bin/python bench/head_parse.py   (needs `pip install httptools`)
"""

from __future__ import annotations

import platform
import timeit

HEAD = (
    b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n"
    b"Connection: keep-alive\r\n\r\n"
)


def python_split() -> object:
    lines = HEAD[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name, value.strip()))
    return lines[0], headers


def main() -> None:
    import httptools

    class Sink:
        __slots__ = ("headers",)

        def __init__(self) -> None:
            self.headers: list[tuple[bytes, bytes]] = []

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

    def with_httptools() -> object:
        sink = Sink()
        parser = httptools.HttpRequestParser(sink)
        parser.feed_data(HEAD)
        return parser.get_method(), sink.headers

    n = 200_000
    ours = min(timeit.repeat(python_split, number=n, repeat=5)) / n * 1e6
    peer = min(timeit.repeat(with_httptools, number=n, repeat=5)) / n * 1e6
    python = platform.python_version()
    print(f"machine: {platform.machine()}, Python {python}, httptools {httptools.__version__}")
    print(f"python split {ours:.2f} us/head, httptools {peer:.2f} us/head, ratio {ours / peer:.2f}")


if __name__ == "__main__":
    main()
