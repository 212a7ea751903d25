"""The agent's web dashboard under /ui/: what runs and what happened, live, for a page kept open.

Served by the agent's own app (same listener, same token), but not with the API's bearer header: a
browser logs in once with the token in a form and gets a session cookie (HttpOnly, SameSite=Strict,
path /ui). The cookie is a random session id kept in memory, never the token, so a stolen cookie
dies with the agent or at logout and never reveals the token. Every page needs the session; the one
action (a rollback) also needs the session's CSRF token. Pages are Jinja2 templates rendered from
the same data the API serves; no build step, no CDN, the page's script is a file of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from herdsman.agent.api import AgentView
from herdsman.agent.live import RateHistory, per_service, sparkline
from herdsman.agent.metrics import RouterTotals
from herdsman.errors import HerdError

COOKIE = "herd_session"
SESSION_SECONDS = 12 * 3600
FORM_BYTES = 16384  # a login or action form is a few fields
STREAM_SECONDS = 30  # a live stream ends after this; the browser's EventSource reconnects
TEMPLATES = Path(__file__).parent / "templates"
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class DashboardView(AgentView, Protocol):
    """What the dashboard asks of the agent: what the API asks, and the router's totals."""

    router_totals: RouterTotals
    stopping: asyncio.Event  # set when the agent stops: live streams end then, not at their timeout


@dataclass
class Sessions:
    """Logged-in browsers: session id -> (CSRF token, expiry), in memory only."""

    live: dict[str, tuple[str, float]] = field(default_factory=dict)

    def open(self) -> str:
        now = time.time()
        self.live = {k: v for k, v in self.live.items() if v[1] > now}
        session = secrets.token_urlsafe(32)
        self.live[session] = (secrets.token_urlsafe(32), now + SESSION_SECONDS)
        return session

    def csrf(self, session: str | None) -> str | None:
        """The session's CSRF token, or None when there is no such session (or it expired)."""
        found = self.live.get(session or "")
        return found[0] if found is not None and found[1] > time.time() else None

    def close(self, session: str | None) -> None:
        self.live.pop(session or "", None)


def make_dashboard(agent: DashboardView, token: str) -> FastAPI:
    """The dashboard as an app of its own, to be mounted at /ui on the agent's app (out of its
    OpenAPI schema, and outside the bearer-token dependency of its routes)."""
    sessions = Sessions()
    history = RateHistory()
    notices: list[str] = []  # outcomes of actions asked from the page, newest last
    pages = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def secure(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    def render(request: Request, name: str, code: int = 200, **values: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "")
        return HTMLResponse(pages.get_template(name).render(base=base, env=agent.env, **values), code)

    def to(request: Request, path: str) -> RedirectResponse:
        return RedirectResponse(request.scope.get("root_path", "") + path, status_code=303)

    def session_of(request: Request) -> str | None:
        session = request.cookies.get(COOKIE)
        return session if sessions.csrf(session) is not None else None

    async def form(request: Request) -> dict[str, str] | None:
        """The fields of a posted form, or None when it is too big to be one of ours."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > FORM_BYTES:
                return None
        try:
            fields = parse_qs(body.decode(errors="replace"), max_num_fields=10)
        except ValueError:  # more fields than any form of ours has
            return None
        return {k: v[0] for k, v in fields.items()}

    def sample() -> None:
        history.observe(time.monotonic(), per_service(agent.router_totals.requests))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC:
            return Response("not found", 404, media_type="text/plain")
        return Response((TEMPLATES / name).read_bytes(), media_type=STATIC[name])

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request) -> HTMLResponse:
        return render(request, "login.html", wrong=False)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        fields = await form(request)
        if fields is None:
            return Response("not a login form", 413, media_type="text/plain")
        given = fields.get("token", "").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return render(request, "login.html", 401, wrong=True)
        response = to(request, "/")
        response.set_cookie(
            COOKIE,
            sessions.open(),
            max_age=SESSION_SECONDS,
            path=request.scope.get("root_path", "") or "/",
            httponly=True,
            samesite="strict",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        session = session_of(request)
        fields = await form(request) or {}
        if session is not None and hmac.compare_digest(fields.get("csrf", ""), csrf_of(session)):
            sessions.close(session)
        response = to(request, "/login")
        response.delete_cookie(COOKIE, path=request.scope.get("root_path", "") or "/")
        return response

    def csrf_of(session: str) -> str:
        return sessions.csrf(session) or ""

    @app.get("/", include_in_schema=False)
    async def overview(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return to(request, "/login")
        sample()
        return render(
            request,
            "overview.html",
            csrf=csrf_of(session),
            notices=notices[-5:],
            **await _data(agent, history),
        )

    @app.get("/live", include_in_schema=False)
    async def live(request: Request) -> Response:
        """Server-sent events: every second, each service's request rate and its sparkline."""
        if session_of(request) is None:
            return Response("log in first", 401, media_type="text/plain")

        async def events() -> AsyncIterator[bytes]:
            yield b"retry: 1000\n\n"
            ends = time.monotonic() + STREAM_SECONDS
            while time.monotonic() < ends and not agent.stopping.is_set():
                if await request.is_disconnected():
                    return
                sample()
                rates = {
                    s: {"rate": round(history.latest(s), 1), "points": sparkline(list(h))}
                    for s, h in history.rates.items()
                }
                yield b"data: " + json.dumps(rates).encode() + b"\n\n"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(agent.stopping.wait(), 1.0)

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/rollback", include_in_schema=False)
    async def rollback(request: Request) -> Response:
        """`POST /v1/rollback` from the page: the same deploy, run as a task of the agent's."""
        session = session_of(request)
        if session is None:
            return to(request, "/login")
        fields = await form(request) or {}
        if not hmac.compare_digest(fields.get("csrf", ""), csrf_of(session)):
            return Response("a valid CSRF token is needed", 403, media_type="text/plain")
        number = fields.get("release", "")
        if not number.isdigit() or not 1 <= int(number) <= 2**62:
            return Response("release: a release number is needed", 400, media_type="text/plain")
        notices.append(f"rollback to release {number}: started")

        async def run() -> None:
            try:
                release = await agent.deploy({}, rollback=True, rollback_to=int(number))
                notices.append(f"rollback to release {number}: release {release.number} {release.status}")
            except HerdError as exc:
                notices.append(f"rollback to release {number} failed: {exc.message}")
            except Exception as exc:  # a bug: the page must still tell
                notices.append(f"rollback to release {number} failed: unexpected {exc!r}")

        task = asyncio.create_task(run())
        agent.operations.add(task)
        task.add_done_callback(agent.operations.discard)
        return to(request, "/")

    return app


async def _data(agent: DashboardView, history: RateHistory) -> dict[str, Any]:
    """What the overview shows: the API's data, arranged for reading."""
    now = time.time()
    status = await agent.status()
    by_service: dict[str, list[dict[str, Any]]] = {name: [] for name in status.services}
    for i in sorted(await agent.instances(), key=lambda i: (i.service, i.id)):
        by_service.setdefault(i.service, []).append(
            {
                "id": i.id,
                "release": i.release,
                "state": i.state,
                "health": f"unhealthy: {i.unhealthy}"
                if i.unhealthy
                else "ok"
                if i.state == "running"
                else "-",
                "address": i.address,
                "uptime": _age(now - i.started) if i.state == "running" else i.detail,
            }
        )
    releases = [
        {
            "number": r.number,
            "when": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created)),
            "ago": _age(now - r.created),
            "trigger": r.trigger,
            "revision": r.revision or "-",
            "copy_of": r.copy_of,
            "status": r.status,
            "reason": r.reason,
            "current": r.number == status.release,
            "images": {name: _short(e.image) for name, e in r.services().items()},
        }
        for r in reversed(agent.state.releases(agent.env))
    ]
    quarantined = [
        {
            "id": k.id,
            "service": k.service,
            "reason": str(k.record.get("reason", "")),
            "ago": _age(now - k.when),
        }
        for k in agent.quarantine.all()
    ]
    events = [
        {
            "when": time.strftime("%H:%M:%S", time.localtime(e["at"])),
            "kind": e["kind"],
            "service": e["service"],
            "message": e["message"],
        }
        for e in reversed(agent.state.events(agent.env, last=25))
    ]
    services = {
        name: {
            "status": s,
            "instances": by_service.get(name, []),
            "rate": round(history.latest(name), 1),
            "points": sparkline(list(history.rates.get(name, []))),
        }
        for name, s in status.services.items()
    }
    return {
        "status": status,
        "services": services,
        "releases": releases,
        "quarantined": quarantined,
        "events": events,
    }


def _short(image: str) -> str:
    algorithm, _, digest = image.partition(":")
    return f"{algorithm}:{digest[:12]}" if digest else image[:19]


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
