"""HAProxy's runtime API over its unix stats socket: one command per connection, so each reply
is known to be that command's, and a refusal is an error with HAProxy's own words."""

from __future__ import annotations

import asyncio
from pathlib import Path

from herdsman.errors import DeployError

# replies that mean success; most successful commands reply nothing at all
OK_REPLIES = ("New server registered.", "Server deleted.")


class Runtime:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    async def ask(self, command: str, timeout: float = 10.0) -> str:
        """The reply to ``command`` (one line, no ``;``)."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.socket_path)), 5)
        except (OSError, TimeoutError) as exc:
            raise DeployError(f"HAProxy is not answering on {self.socket_path}: {exc}", delay=1.0) from exc
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            reply = await asyncio.wait_for(reader.read(), timeout)
        except (OSError, TimeoutError) as exc:
            raise DeployError(f"HAProxy did not answer {command!r}: {exc}", delay=1.0) from exc
        finally:
            writer.close()
        return reply.decode(errors="replace")

    async def run(self, command: str) -> None:
        """Apply ``command``; HAProxy's refusal becomes a DeployError."""
        reply = (await self.ask(command)).strip()
        if reply and reply not in OK_REPLIES:
            raise DeployError(f"HAProxy refused {command!r}: {reply}")

    async def show_stat(self) -> str:
        return await self.ask("show stat")

    async def worker_pid(self) -> int | None:
        try:
            info = await self.ask("show info", 2)
        except DeployError:
            return None
        for line in info.splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        return None
