"""The agent's HTTP API: what runs, what happened, and the few things one may ask the agent to do.

FastAPI, because the API must publish an OpenAPI schema that matches it exactly (schemathesis
tests every operation against it), and FastAPI derives that schema from the same pydantic models
that shape the responses. Every request, /metrics and /openapi.json included, needs the token
kept in `.herd/agent-ENV.token` (created at the agent's first start, mode 0600, never logged).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from herdsman import __version__
from herdsman.agent.schemas import (
    ERRORS,
    ID,
    NOT_FOUND,
    STREAM,
    WITH_BODY,
    DeployRequest,
    Event,
    Finding,
    Instance,
    Quarantined,
    QuarantineRequest,
    Quarantining,
    ReleaseInfo,
    Replicas,
    RollbackRequest,
    ServiceStatus,
    Status,
)
from herdsman.errors import HerdError

if TYPE_CHECKING:
    from herdsman.quarantine import Quarantine
    from herdsman.state import Release, StateStore


class AgentView(Protocol):
    """What the API asks of the agent: the routes are typed against this, not the Agent class."""

    env: str
    quarantine: Quarantine
    operations: set[asyncio.Task[None]]  # deploys asked through the API, running

    @property
    def state(self) -> StateStore: ...

    async def status(self) -> Status: ...

    async def instances(self) -> list[Instance]: ...

    def scale(self, service: str, replicas: int | None) -> None: ...

    def quarantine_instance(self, instance_id: str, reason: str) -> str: ...

    async def verify(self) -> list[Finding]: ...

    def metrics(self) -> bytes: ...

    async def deploy(
        self,
        secrets: Mapping[str, str],
        *,
        rollback_to: int | None = None,
        rollback: bool = False,
        restore_data: bool = False,
        force: bool = False,
        say: Callable[[str], None] | None = None,
        by: str = "",
    ) -> Release: ...


def make_app(agent: AgentView, token: str) -> FastAPI:
    bearer = HTTPBearer(auto_error=False, description="The token in .herd/agent-ENV.token")

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a valid token is needed", headers={"WWW-Authenticate": "Bearer"})

    allowed: dict[tuple[str, str], set[str]] = {}  # (path, method) -> query names, from the schema

    def known_query(request: Request) -> None:
        """A misspelt query parameter is an error, not silently ignored."""
        if not allowed:
            for path, operations in app.openapi()["paths"].items():
                for method, operation in operations.items():
                    names = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
                    allowed[(path, method)] = names
        route = getattr(request.scope.get("route"), "path_format", "")
        unknown = sorted(set(request.query_params) - allowed.get((route, request.method.lower()), set()))
        if unknown:
            raise RequestValidationError(
                [
                    {"loc": ["query", n], "msg": "unknown query parameter", "type": "extra_forbidden"}
                    for n in unknown
                ]
            )

    app = FastAPI(
        title="herdsman agent",
        version=__version__,
        description="The API of one environment's agent. Every request needs `Authorization: Bearer TOKEN`.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(authorised), Depends(known_query)],
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """As FastAPI's own, but a 405 lists every method of the path (Starlette lists one route's)."""
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            methods: set[str] = set()
            for route in app.routes:
                if route.matches(request.scope)[0] != Match.NONE:
                    methods |= set(getattr(route, "methods", None) or ())
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/v1/status", response_model=Status, responses=ERRORS)
    async def status() -> Status:
        return await agent.status()

    @app.get("/v1/instances", response_model=list[Instance], responses=ERRORS)
    async def instances() -> list[Instance]:
        return await agent.instances()

    @app.get("/v1/releases", response_model=list[ReleaseInfo], responses=ERRORS)
    def releases() -> list[ReleaseInfo]:
        return [
            ReleaseInfo(
                number=r.number,
                created=r.created,
                trigger=r.trigger,
                status=r.status,
                reason=r.reason,
                by=r.by,
                images={name: entry.image for name, entry in r.services().items()},
            )
            for r in agent.state.releases(agent.env)
        ]

    @app.get("/v1/events", response_model=list[Event], responses=ERRORS)
    async def events(
        after: int = Query(0, ge=0, le=2**62, description="Only events with a greater id"),
        limit: int = Query(100, ge=1, le=1000),
        wait: float = Query(0.0, ge=0, le=30, description="Seconds to wait for a first new event"),
    ) -> list[Event]:
        deadline = time.monotonic() + wait
        while True:
            found = agent.state.events(agent.env, after=after, limit=limit)
            if found or time.monotonic() >= deadline:
                return [Event(**{k: e[k] for k in Event.model_fields}) for e in found]
            await asyncio.sleep(0.1)

    @app.put("/v1/services/{service}/replicas", response_model=ServiceStatus, responses=WITH_BODY)
    async def scale(body: Replicas, service: str = Path(pattern=ID)) -> ServiceStatus:
        try:
            agent.scale(service, body.replicas)
        except HerdError as exc:
            raise HTTPException(404, exc.message) from None
        return (await agent.status()).services[service]

    @app.post("/v1/deploy", response_class=StreamingResponse, responses={**WITH_BODY, **STREAM})
    async def deploy(body: DeployRequest) -> StreamingResponse:
        """Deploy the project's files as they are now (`herd deploy` when an agent runs), with the
        progress streamed; the deploy goes on if the caller leaves."""
        return _stream(agent, lambda say: agent.deploy(body.secrets, force=body.force, say=say, by=body.by))

    @app.post("/v1/rollback", response_class=StreamingResponse, responses={**WITH_BODY, **STREAM})
    async def rollback(body: RollbackRequest) -> StreamingResponse:
        """Roll out an earlier release's content again, as a new release (`herd rollback`)."""
        return _stream(
            agent,
            lambda say: agent.deploy(
                body.secrets,
                rollback=True,
                rollback_to=body.release,
                restore_data=body.restore_data,
                say=say,
                by=body.by,
            ),
        )

    @app.post("/v1/verify", response_model=list[Finding], responses=ERRORS)
    async def verify() -> list[Finding]:
        """Check every running instance against its image and release now (see `herd verify`)."""
        return await agent.verify()

    @app.get("/v1/quarantine", response_model=list[Quarantined], responses=ERRORS)
    def quarantine() -> list[Quarantined]:
        return [_quarantined(k) for k in agent.quarantine.all()]

    @app.post(
        "/v1/instances/{instance}/quarantine",
        status_code=202,
        response_model=Quarantining,
        responses=WITH_BODY,
    )
    def pull(body: QuarantineRequest, instance: str = Path(pattern=ID)) -> Quarantining:
        """Quarantine a running instance (`herd quarantine add`): it is replaced first (it still
        answers until its replacement is admitted), then taken out of the pool, stopped and kept."""
        reason = f"quarantined by hand: {body.reason}"
        try:
            service = agent.quarantine_instance(instance, reason)
        except HerdError as exc:
            raise HTTPException(404, exc.message) from None
        return Quarantining(instance=instance, service=service, reason=reason)

    @app.get("/v1/quarantine/{instance}", response_model=Quarantined, responses=NOT_FOUND)
    def inspect(instance: str = Path(pattern=ID), lines: int = Query(20, ge=0, le=10000)) -> Quarantined:
        try:
            kept = agent.quarantine.get(instance)
        except HerdError as exc:
            raise HTTPException(404, exc.message) from None
        return _quarantined(kept, lines, full=True)

    @app.delete("/v1/quarantine/{instance}", status_code=204, responses=NOT_FOUND)
    def purge(instance: str = Path(pattern=ID)) -> Response:
        try:
            agent.quarantine.purge([instance])
        except HerdError as exc:
            raise HTTPException(404, exc.message) from None
        return Response(status_code=204)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={**ERRORS, 200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(agent.metrics(), media_type=CONTENT_TYPE_LATEST)

    return app


def _stream(
    agent: AgentView, operation: Callable[[Callable[[str], None]], Awaitable[Release]]
) -> StreamingResponse:
    """Run ``operation`` as a task of the agent's (it finishes even if the caller goes away) and
    stream its progress lines, then its outcome, as JSON lines."""
    lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def run() -> None:
        try:
            release = await operation(lambda line: lines.put_nowait({"progress": line}))
            outcome: dict[str, Any] = {
                "release": {"number": release.number, "copy_of": release.copy_of, "status": release.status}
            }
        except HerdError as exc:
            outcome = {"error": {"message": exc.message, "hint": exc.hint, "retryable": exc.retryable}}
        except Exception as exc:  # a bug: the caller must still hear of it
            outcome = {
                "error": {
                    "message": f"unexpected {type(exc).__name__}: {exc}",
                    "hint": "",
                    "retryable": False,
                }
            }
        lines.put_nowait(outcome)

    task = asyncio.create_task(run())
    agent.operations.add(task)
    task.add_done_callback(agent.operations.discard)

    async def body() -> AsyncIterator[bytes]:
        while True:
            line = await lines.get()
            yield json.dumps(line).encode() + b"\n"
            if "progress" not in line:
                return

    return StreamingResponse(body(), media_type="application/x-ndjson")


def openapi_schema() -> dict[str, Any]:
    """The schema, without an agent (for `herd api schema` and the published docs/openapi.json)."""
    from typing import cast

    return make_app(cast("AgentView", None), "").openapi()


def _quarantined(kept: Any, lines: int = 0, full: bool = False) -> Quarantined:
    record = kept.record
    return Quarantined(
        id=kept.id,
        service=kept.service,
        release=record.get("release"),
        reason=str(record.get("reason", "")),
        quarantined=kept.when,
        changed=kept.changed_files(),
        log_tail=kept.log_tail(lines) if lines else [],
        record=record if full else {},
    )
