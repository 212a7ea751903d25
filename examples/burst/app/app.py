"""burst: the smallest web service herdsman bursts to 1,000 instances (issue 12, part 4).

One asyncio server on 127.0.0.1:$PORT answering every GET (`/health` for the health check, `/`
for traffic) with a few bytes, keeping connections alive as the router expects. Nothing is
imported beyond asyncio, os and signal, and not even the ssl module asyncio would load for TLS it
never does here (a fifth of its import time and 4 MB per process), so an instance is ready in
tens of milliseconds and costs about 14 MB: a thousand of them fit on a small machine. SIGTERM
closes the listener and ends the process at once (the router has drained it before herdsman
stops it).
"""

import os
import signal
import sys

sys.modules["ssl"] = None  # type: ignore[assignment]  # asyncio then runs without TLS support
import asyncio  # noqa: E402

INSTANCE = os.environ.get("HERD_INSTANCE", "local").encode()


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].split(b" ")
            path = line[1] if len(line) > 1 else b"/"
            body = b"ok\n" if path == b"/health" else b"burst " + INSTANCE + b"\n"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()
            if b"connection: close" in head.lower():
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", int(os.environ["PORT"]), backlog=256)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
