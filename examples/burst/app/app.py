"""burst: the smallest web service herdsman bursts to 1,000 instances (issue 12, part 4).

One process on 127.0.0.1:$PORT answering every request (`/health` for the health check, `/` for
traffic) with a few bytes, keeping connections alive (and answering pipelined requests in order)
as the router expects. It imports only interpreter built-ins (`_socket`, `select`, `os`): an
asyncio version spent about 70 ms of CPU importing asyncio alone, which was most of what starting
an instance cost, so this one is ready in about 10 ms and costs a few MB: a thousand fit on a small
machine. SIGTERM keeps its default action and ends the process at once (the router has drained it
before herdsman stops it).
"""

import os
import select
from _socket import AF_INET, SO_REUSEADDR, SOCK_STREAM, SOL_SOCKET, socket

INSTANCE = os.environ.get("HERD_INSTANCE", "local").encode()
LIMIT = 65536  # a head longer than this closes the connection


def answer(head: bytes) -> bytes:
    line = head.split(b"\r\n", 1)[0].split(b" ")
    path = line[1] if len(line) > 1 else b"/"
    body = b"ok\n" if path == b"/health" else b"burst " + INSTANCE + b"\n"
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


def body_length(head: bytes) -> int:
    for line in head.lower().split(b"\r\n")[1:]:
        if line.startswith(b"content-length:"):
            return int(line[15:].strip() or 0)
    return 0


def serve() -> None:
    listener = socket(AF_INET, SOCK_STREAM)
    listener.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(os.environ["PORT"])))
    listener.listen(256)
    listener.setblocking(False)
    poll = select.epoll()
    poll.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, tuple[socket, bytearray]] = {}
    while True:
        for fd, _ in poll.poll():
            if fd == listener.fileno():
                try:
                    fileno, _ = listener._accept()
                except OSError:
                    continue
                conn = socket(AF_INET, SOCK_STREAM, fileno=fileno)
                conn.setblocking(False)
                conns[fileno] = (conn, bytearray())
                poll.register(fileno, select.EPOLLIN)
                continue
            conn, pending = conns[fd]
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            pending += data
            replies = []
            close = not data
            while not close and (end := pending.find(b"\r\n\r\n")) >= 0:
                head = bytes(pending[: end + 4])
                size = end + 4 + body_length(head)
                if len(pending) < size:
                    break
                del pending[:size]
                replies.append(answer(head))
                close = b"connection: close" in head.lower()
            if len(pending) > LIMIT:
                close = True
            try:
                if replies:
                    conn.setblocking(True)  # a few bytes each: the socket buffer takes them
                    conn.sendall(b"".join(replies))
                    conn.setblocking(False)
            except OSError:
                close = True
            if close:
                poll.unregister(fd)
                del conns[fd]
                conn.close()


if __name__ == "__main__":
    serve()
