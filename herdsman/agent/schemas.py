"""The shapes of the agent's API: requests, responses and the error responses each route declares.

Kept apart from the routes (`api.py`) so that what the API promises can be read in one place;
FastAPI derives the published OpenAPI schema (`docs/openapi.json`) from these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

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
    health: str = Field(
        "", description="Its last liveness check's result (healthy, failing (why)); empty if not probed"
    )
    node: str = Field("", description="The node it runs on (swarm), else empty")
    evicted: str = Field("", description="Why it must move to another node (drained or lost), if it must")


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
    by: str = Field("", description="Who asked for it: user@host ('' when not recorded)")
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
    unchecked: list[DriftFound] = Field(default_factory=list)  # what could not be checked


class Quarantining(BaseModel):
    instance: str
    service: str
    reason: str


class QuarantineRequest(BaseModel):
    reason: str = Field(
        "asked by hand", max_length=500, description="Why; kept in the instance's quarantine record"
    )


class Problem(BaseModel):
    detail: str


SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class SecretsRequest(BaseModel):
    secrets: dict[
        Annotated[str, StringConstraints(pattern=SECRET_NAME)],
        Annotated[str, StringConstraints(pattern=r"^[^\x00]*$", max_length=65536)],
    ] = Field(
        default_factory=dict,
        description="Values of the stack's secrets by name, from the deployer's environment. The agent "
        "holds them in memory only (never on disk) and starts and heals the release's instances with them.",
    )


class DeployRequest(SecretsRequest):
    by: str = Field(
        "",
        max_length=200,
        pattern=r"^[^\x00-\x1f]*$",
        description="Who asks (user@host), recorded in the release (default: the agent's own user@host)",
    )

    force: bool = Field(
        False,
        description="Record and roll out a new release even when images, config and routes equal the "
        "current release's (otherwise such a deploy records nothing and replaces nothing)",
    )


class RollbackRequest(SecretsRequest):
    by: str = Field(
        "",
        max_length=200,
        pattern=r"^[^\x00-\x1f]*$",
        description="Who asks (user@host), recorded in the release (default: the agent's own user@host)",
    )

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
