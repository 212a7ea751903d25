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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from herdsman import __version__
from herdsman.errors import HerdError

if TYPE_CHECKING:
    from herdsman.agent.daemon import Agent
    from herdsman.state import Release

ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class ServiceStatus(BaseModel):
    replicas: int = Field(description="Instances wanted now")
    set_by: Literal["release", "herd scale", "autoscaler"]
    running: int
    note: str = Field("", description="e.g. a crash loop in backoff")


class Status(BaseModel):
    env: str
    pid: int
    version: str
    release: int | None = Field(description="The current release, if any")
    services: dict[str, ServiceStatus]


class Instance(BaseModel):
    id: str
    service: str
    release: int
    image: str
    state: Literal["running", "exited"]
    detail: str
    address: str
    started: float
    unhealthy: str = Field("", description="Why its liveness checks failed, if they did")


class Event(BaseModel):
    id: int
    at: float
    kind: str
    service: str
    instance: str
    release: int | None
    message: str
    data: dict[str, Any]


class ReleaseInfo(BaseModel):
    number: int
    created: float
    trigger: str
    status: str
    reason: str
    images: dict[str, str]


class Replicas(BaseModel):
    replicas: int | None = Field(
        ge=0, le=10000, description="A fixed count, or null: back to the release's count (and autoscaling)"
    )


class Quarantined(BaseModel):
    id: str
    service: str
    release: int | None
    reason: str
    quarantined: float
    changed: list[str]
    log_tail: list[str] = Field(default_factory=list)
    record: dict[str, Any] = Field(default_factory=dict)


class DriftFound(BaseModel):
    what: str
    detail: str


class Finding(BaseModel):
    instance: str
    service: str
    release: int
    action: Literal["reported", "replaced", "being replaced"]
    drift: list[DriftFound]


class Problem(BaseModel):
    detail: str


SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class DeployRequest(BaseModel):
    secrets: dict[
        Annotated[str, StringConstraints(pattern=SECRET_NAME)],
        Annotated[str, StringConstraints(pattern=r"^[^\x00]*$", max_length=65536)],
    ] = Field(
        default_factory=dict,
        description="Values of the stack's secrets by name, from the deployer's environment. The agent "
        "holds them in memory only (never on disk) and starts and heals the release's instances with them.",
    )


class RollbackRequest(DeployRequest):
    release: int | None = Field(
        None, ge=1, le=2**62, description="The release to copy (default: the previous good one)"
    )
    restore_data: bool = Field(
        False, description="Also put back the volumes as they were before later migrations"
    )


STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/x-ndjson": {}},
        "description": "One JSON object a line: {progress}, then {release} or {error: {message, hint}}",
    }
}


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No token, or a wrong one"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: {"model": Problem, "description": "No such thing"},
}
WITH_BODY: dict[int | str, dict[str, Any]] = {**NOT_FOUND, 400: {"model": Problem, "description": "Not JSON"}}


def make_app(agent: Agent, token: str) -> FastAPI:
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
        return await agent_status(agent)

    @app.get("/v1/instances", response_model=list[Instance], responses=ERRORS)
    async def instances() -> list[Instance]:
        return await agent_instances(agent)

    @app.get("/v1/releases", response_model=list[ReleaseInfo], responses=ERRORS)
    def releases() -> list[ReleaseInfo]:
        return [
            ReleaseInfo(
                number=r.number,
                created=r.created,
                trigger=r.trigger,
                status=r.status,
                reason=r.reason,
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
        return (await agent_status(agent)).services[service]

    @app.post("/v1/deploy", response_class=StreamingResponse, responses={**WITH_BODY, **STREAM})
    async def deploy(body: DeployRequest) -> StreamingResponse:
        """Deploy the project's files as they are now (`herd deploy` when an agent runs), with the
        progress streamed; the deploy goes on if the caller leaves."""
        return _stream(agent, lambda say: agent.deploy(body.secrets, say=say))

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
            ),
        )

    @app.post("/v1/verify", response_model=list[Finding], responses=ERRORS)
    async def verify() -> list[Finding]:
        """Check every running instance against its image and release now (see `herd verify`)."""
        return [
            Finding(
                instance=f.instance,
                service=f.service,
                release=f.release,
                action=action,
                drift=[DriftFound(what=d.what, detail=d.detail) for d in f.drifts],
            )
            for f, action in await agent.drift.check()
        ]

    @app.get("/v1/quarantine", response_model=list[Quarantined], responses=ERRORS)
    def quarantine() -> list[Quarantined]:
        return [_quarantined(k) for k in agent.quarantine.all()]

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
    agent: Agent, operation: Callable[[Callable[[str], None]], Awaitable[Release]]
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

    return make_app(cast("Agent", None), "").openapi()


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


async def agent_status(agent: Agent) -> Status:
    release = agent.state.current_release(agent.env)
    scales = agent.state.scales(agent.env)
    notes = agent.state.notes(agent.env)
    running: dict[str, int] = {}
    for service, seen in agent.fleet.services.items():
        running[service] = sum(1 for s in seen.values() if s.running)
    services = {}
    for name, want in agent.wants(release).items() if release else []:
        mode = scales.get(name, (0, "release"))[1]
        set_by: Literal["release", "herd scale", "autoscaler"] = (
            "herd scale" if mode == "fixed" else "autoscaler" if mode == "auto" else "release"
        )
        services[name] = ServiceStatus(
            replicas=want.policy.replicas,
            set_by=set_by,
            running=running.get(name, 0),
            note=notes.get(name, ""),
        )
    import os

    return Status(
        env=agent.env,
        pid=os.getpid(),
        version=__version__,
        release=release.number if release else None,
        services=services,
    )


async def agent_instances(agent: Agent) -> list[Instance]:
    return [
        Instance(
            id=s.id,
            service=s.service,
            release=s.release,
            image=s.labels.get("herd.image", ""),
            state=s.state,
            detail=s.detail,
            address=s.address,
            started=s.started,
            unhealthy=agent.watcher.unhealthy.get(s.id, ""),
        )
        for s in await agent.deployment.driver.list(agent.deployment.executor.target.selector)
    ]
