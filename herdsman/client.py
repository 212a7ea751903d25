"""A Python client of the agent's API (what the CLI uses when an agent runs).

    from herdsman.client import AgentClient
    with AgentClient.for_project(Path("herd.toml")) as agent:
        print(agent.status()["release"])
        agent.scale("web", 3)

It talks over the agent's unix socket (`.herd/run/agent-ENV.sock`) with the token from
`.herd/agent-ENV.token`, or over TCP when given a base URL (`herd up --api 127.0.0.1:PORT`).
Errors from the API become `HerdError`s carrying the API's own message.

httpx loads with the first `AgentClient` (its import alone costs about 100 ms): `get_json`, one
GET through the standard library's http.client, serves the read-only commands that must start
fast (`herd ps`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from herdsman.errors import DeployError, HerdError

if TYPE_CHECKING:
    import httpx


def _token(home: Path, env: str) -> str:
    token_file = home / f"agent-{env}.token"
    try:
        return token_file.read_text().strip()
    except FileNotFoundError:
        raise HerdError(
            f"no agent has run for environment {env!r} here (no {token_file})", hint="herd up -d"
        ) from None


def _refusal(status: int, body: bytes) -> HerdError:
    """The API's error answer as a HerdError with its own message (`detail`)."""
    text = body.decode("utf-8", "replace")
    try:
        detail = json.loads(text).get("detail", text)
    except (ValueError, AttributeError):
        detail = text
    return HerdError(f"the agent said {status}: {detail}")


def get_json(home: Path, env: str, path: str, *, timeout: float = 60.0) -> Any:
    """One GET of the API of ``env``'s agent over its unix socket, decoded: what `AgentClient` would
    answer, without loading httpx (http.client is in the standard library). Errors as `_call`'s."""
    import http.client
    import socket

    token = _token(home, env)
    connection = http.client.HTTPConnection("agent", timeout=timeout)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.sock = sock  # http.client sends on a socket already connected, as here
        sock.settimeout(timeout)
        sock.connect(str(home / "run" / f"agent-{env}.sock"))
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        status, body = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise HerdError(f"the agent is not answering: {exc}", hint="is it running? `herd up -d`") from None
    finally:
        connection.close()
    if status >= 400:
        raise _refusal(status, body)
    try:
        return json.loads(body)
    except ValueError:
        raise HerdError(
            f"the agent answered {path} with something that is not JSON", hint="see its log"
        ) from None


class AgentClient:
    def __init__(self, token: str, *, socket: Path | None = None, base_url: str | None = None) -> None:
        import httpx

        transport = httpx.HTTPTransport(uds=str(socket)) if socket is not None else None
        self.http = httpx.Client(
            base_url=base_url or "http://agent",
            transport=transport,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0, read=60.0),
        )

    @classmethod
    def for_home(cls, home: Path, env: str, base_url: str | None = None) -> AgentClient:
        """The client of the agent of ``env`` in a project's `.herd` directory."""
        token = _token(home, env)
        socket = None if base_url else home / "run" / f"agent-{env}.sock"
        return cls(token, socket=socket, base_url=base_url)

    @classmethod
    def for_project(cls, file: Path | None = None, env: str | None = None) -> AgentClient:
        from herdsman.spec import herd_home, load_project

        project = load_project(file)
        return cls.for_home(herd_home(project), env or project.stack.stack.environment)

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise HerdError(
                f"the agent is not answering: {exc}", hint="is it running? `herd up -d`"
            ) from None
        if response.status_code >= 400:
            self._raise_for(response)
        return response

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        raise _refusal(response.status_code, response.content)

    # the API --------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/status").json())

    def instances(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/instances").json())

    def releases(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/releases").json())

    def events(self, after: int = 0, *, limit: int = 100, wait: float = 0.0) -> list[dict[str, Any]]:
        params: dict[str, int | float] = {"after": after, "limit": limit, "wait": wait}
        return list(self._call("GET", "/v1/events", params=params).json())

    def follow(self, after: int = 0) -> Iterator[dict[str, Any]]:
        """Every event after ``after``, as it happens (long polling; runs until interrupted)."""
        while True:
            for event in self.events(after, wait=25):
                after = max(after, int(event["id"]))
                yield event

    def scale(self, service: str, replicas: int | None) -> dict[str, Any]:
        return dict(self._call("PUT", f"/v1/services/{service}/replicas", json={"replicas": replicas}).json())

    def deploy(
        self,
        secrets: Mapping[str, str],
        on_progress: Callable[[str], None] | None = None,
        *,
        force: bool = False,
    ) -> dict[str, Any]:
        """Deploy the project's files as they are now; each progress line goes to ``on_progress``.
        Returns the release ({number, copy_of, status}): the current one when nothing changed (and
        not ``force``); a failed deploy raises its DeployError."""
        from herdsman.state import asker

        body = {"secrets": dict(secrets), "force": force, "by": asker()}
        return self._operation("/v1/deploy", body, on_progress)

    def rollback(
        self,
        release: int | None,
        secrets: Mapping[str, str],
        on_progress: Callable[[str], None] | None = None,
        *,
        restore_data: bool = False,
    ) -> dict[str, Any]:
        """Roll ``release``'s content (default: the previous good one) out again, as a new release."""
        from herdsman.state import asker

        body = {"release": release, "secrets": dict(secrets), "restore_data": restore_data, "by": asker()}
        return self._operation("/v1/rollback", body, on_progress)

    def _operation(
        self, path: str, body: dict[str, Any], on_progress: Callable[[str], None] | None
    ) -> dict[str, Any]:
        """A long operation: its progress arrives as JSON lines, its outcome as the last line."""
        import httpx

        try:
            with self.http.stream(
                "POST", path, json=body, timeout=httpx.Timeout(10.0, read=None)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    if "progress" in item:
                        if on_progress is not None:
                            on_progress(str(item["progress"]))
                    elif "release" in item:
                        return dict(item["release"])
                    elif "error" in item:
                        error = item["error"]
                        raise DeployError(
                            str(error.get("message", "")),
                            hint=str(error.get("hint", "")),
                            retryable=bool(error.get("retryable")),
                        )
        except httpx.TransportError as exc:
            raise HerdError(
                f"lost the agent during the operation: {exc}",
                hint="it goes on in the agent if it lives: `herd events` and `herd ps` say how it ends",
            ) from None
        raise HerdError("the agent ended the operation without saying how it went", hint="see `herd events`")

    def verify(self) -> list[dict[str, Any]]:
        """Check every running instance now; the agent replaces what drifted (per `drift`)."""
        return list(self._call("POST", "/v1/verify").json())

    def quarantine(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/quarantine").json())

    def inspect(self, instance: str, lines: int = 20) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/quarantine/{instance}", params={"lines": lines}).json())

    def quarantine_instance(self, instance: str, reason: str = "asked by hand") -> dict[str, Any]:
        """Ask the agent to replace ``instance``, then stop and keep it (`herd quarantine add`)."""
        path = f"/v1/instances/{instance}/quarantine"
        return dict(self._call("POST", path, json={"reason": reason}).json())

    def purge(self, instance: str) -> None:
        self._call("DELETE", f"/v1/quarantine/{instance}")

    def metrics(self) -> str:
        return self._call("GET", "/metrics").text

    def openapi(self) -> dict[str, Any]:
        return dict(self._call("GET", "/openapi.json").json())
