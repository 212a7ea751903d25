"""The dashboard's few actions: roll back, scale, quarantine, promote or abort a canary.

Each is a form posted from a page, checked for its session and CSRF token by the dashboard
(`Actions.action`), and does what the API's route for it does (the same agent call), so the page
and `herd` can never disagree. Long ones (a rollback) run as a task of the agent's; their outcome
becomes a notice on the page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from herdsman.agent.pages import PageView
from herdsman.errors import HerdError


@dataclass(frozen=True)
class Actions:
    """What the action routes need of the dashboard."""

    agent: PageView
    action: Callable[[Request], Awaitable[dict[str, str] | Response]]  # the checked form, or a refusal
    to: Callable[[Request, str], RedirectResponse]  # a redirect within the dashboard
    notices: list[str]  # outcomes shown on the page, newest last
    in_background: Callable[[str, Callable[[], Awaitable[str]]], None]


def text(message: str, code: int) -> Response:
    """A plain refusal or answer (the dashboard's pages say the rest)."""
    return PlainTextResponse(message, code)


def add_actions(app: FastAPI, kit: Actions) -> None:
    @app.post("/rollback", include_in_schema=False)
    async def rollback(request: Request) -> Response:
        """`POST /v1/rollback` from the page: the same deploy, run as a task of the agent's."""
        fields = await kit.action(request)
        if isinstance(fields, Response):
            return fields
        number = fields.get("release", "")
        if not number.isdigit() or not 1 <= int(number) <= 2**62:
            return text("release: a release number is needed", 400)

        who = f"the dashboard ({request.client.host if request.client else 'unknown'})"

        async def run() -> str:
            release = await kit.agent.deploy({}, rollback=True, rollback_to=int(number), by=who)
            return f"release {release.number} {release.status}"

        kit.in_background(f"rollback to release {number}", run)
        return kit.to(request, "/")

    @app.post("/scale", include_in_schema=False)
    async def scale(request: Request) -> Response:
        """`PUT /v1/services/NAME/replicas` from the page (`herd scale NAME=N|auto`)."""
        fields = await kit.action(request)
        if isinstance(fields, Response):
            return fields
        service, count = fields.get("service", ""), fields.get("replicas", "").strip()
        if count != "auto" and not (count.isdigit() and int(count) <= 10000):
            return text("replicas: a number from 0 to 10000, or auto", 400)
        try:
            kit.agent.scale(service, None if count == "auto" else int(count))
        except HerdError as exc:
            return text(exc.message, 404)
        kit.notices.append(f"scale {service} to {count}: asked; the agent applies it now")
        return kit.to(request, "/")

    @app.post("/quarantine", include_in_schema=False)
    async def quarantine(request: Request) -> Response:
        """`POST /v1/instances/ID/quarantine` from the page (`herd quarantine add ID`)."""
        fields = await kit.action(request)
        if isinstance(fields, Response):
            return fields
        instance = fields.get("instance", "")
        try:
            kit.agent.quarantine_instance(instance, "quarantined by hand: from the dashboard")
        except HerdError as exc:
            return text(exc.message, 404)
        kit.notices.append(f"quarantine {instance}: asked; it is replaced first, then kept")
        return kit.to(request, "/")

    @app.post("/canary", include_in_schema=False)
    async def canary(request: Request) -> Response:
        """`herd canary promote|abort SERVICE` from the page: the same decision in the state store,
        which the judge reads within a fraction of a second."""
        fields = await kit.action(request)
        if isinstance(fields, Response):
            return fields
        decision, service = fields.get("decision", ""), fields.get("service", "")
        if decision not in ("promote", "abort"):
            return text("decision: promote or abort", 400)
        asked = kit.agent.state.decide_canary(kit.agent.env, decision, service)
        if not asked:
            return text(f"no canary of {service!r} is being judged", 404)
        kit.notices.append(f"{decision} the canary of {service}: asked")
        return kit.to(request, "/")
