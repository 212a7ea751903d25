"""The agent's web dashboard under /ui/: what runs and what happened, live, for a page kept open.

Served by the agent's own app (same listener, same token), but not with the API's bearer header: a
browser logs in once with the token in a form and gets a session cookie (HttpOnly, SameSite=Strict,
path /ui). The cookie is a random session id kept in memory, never the token, so a stolen cookie
dies with the agent or at logout and never reveals the token. Every page needs the session; every
action (roll back, scale, quarantine, promote or abort a canary) also needs the session's CSRF
token, and calls what the API's route for it calls. Pages are Jinja2 templates rendered from the
same data the API serves (`pages.py`); the live parts are server-sent events (`streams.py`) whose
HTML fragments the page's script swaps in. No build step, no CDN, the script is a file of ours.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from herdsman.agent import pages, streams
from herdsman.agent.dashboard_actions import Actions, add_actions, text
from herdsman.agent.live import RateHistory, SeriesHistory, per_service, sparkline, windows
from herdsman.agent.metrics import RouterTotals
from herdsman.agent.schemas import ID
from herdsman.errors import HerdError

COOKIE = "herd_session"
SESSION_SECONDS = 12 * 3600
FORM_BYTES = 16384  # a login or action form is a few fields
TEMPLATES = Path(__file__).parent / "templates"
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class DashboardView(pages.PageView, Protocol):
    """What the dashboard asks of the agent: what the pages ask, the router's totals, logs."""

    router_totals: RouterTotals
    stopping: asyncio.Event  # set when the agent stops: live streams end then, not at their timeout

    def log_file(self, instance_id: str) -> Path | None: ...


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
    series = SeriesHistory()
    notices: list[str] = []  # outcomes of actions asked from the page, newest last
    pages_env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def secure(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    def fragment(name: str, request: Request, **values: Any) -> str:
        base = request.scope.get("root_path", "")
        return pages_env.get_template(name).render(base=base, env=agent.env, **values)

    def render(request: Request, name: str, code: int = 200, **values: Any) -> HTMLResponse:
        return HTMLResponse(fragment(name, request, **values), code)

    def to(request: Request, path: str) -> RedirectResponse:
        return RedirectResponse(request.scope.get("root_path", "") + path, status_code=303)

    def session_of(request: Request) -> str | None:
        session = request.cookies.get(COOKIE)
        return session if sessions.csrf(session) is not None else None

    def csrf_of(session: str) -> str:
        return sessions.csrf(session) or ""

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

    async def action(request: Request) -> dict[str, str] | Response:
        """An action's form, once its session and CSRF token are checked; else the answer to give."""
        session = session_of(request)
        if session is None:
            return to(request, "/login")
        fields = await form(request)
        if fields is None:
            return text("not a form of ours", 413)
        if not hmac.compare_digest(fields.get("csrf", ""), csrf_of(session)):
            return text("a valid CSRF token is needed", 403)
        return fields

    def sample() -> None:
        now = time.monotonic()
        history.observe(now, per_service(agent.router_totals.requests))
        series.observe(now, windows(agent.router_totals))

    def in_background(what: str, operation: Callable[[], Awaitable[str]]) -> None:
        """Run an action as a task of the agent's; its outcome becomes a notice on the page."""
        notices.append(f"{what}: started")

        async def run() -> None:
            try:
                notices.append(f"{what}: {await operation()}")
            except HerdError as exc:
                notices.append(f"{what} failed: {exc.message}")
            except Exception as exc:  # a bug: the page must still tell
                notices.append(f"{what} failed: unexpected {exc!r}")

        task = asyncio.create_task(run())
        agent.operations.add(task)
        task.add_done_callback(agent.operations.discard)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC:
            return text("not found", 404)
        return Response((TEMPLATES / name).read_bytes(), media_type=STATIC[name])

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request) -> HTMLResponse:
        return render(request, "login.html", wrong=False)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        fields = await form(request)
        if fields is None:
            return text("not a login form", 413)
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

    @app.get("/", include_in_schema=False)
    async def overview(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return to(request, "/login")
        sample()
        data = await pages.overview(agent, history)
        return render(
            request,
            "overview.html",
            csrf=csrf_of(session),
            notices=notices[-5:],
            charts=series.charts(),
            **data,
        )

    @app.get("/live", include_in_schema=False)
    async def live(request: Request) -> Response:
        """Server-sent events: every second, each service's request rate and sparkline, the charts
        per release, and the rollouts and canaries in progress (as HTML fragments)."""
        session = session_of(request)
        if session is None:
            return text("log in first", 401)

        def reading() -> dict[str, Any]:
            sample()
            rates = {
                s: {"rate": round(history.latest(s), 1), "points": live_points(s)} for s in history.rates
            }
            now = pages.progress(agent)
            return {
                "rates": rates,
                "charts": fragment("charts.html", request, charts=series.charts()),
                "progress": fragment("progress.html", request, **now),
                "actions": fragment("actions.html", request, csrf=csrf_of(session), **now),
            }

        return streams.every_second(request, agent.stopping, reading)

    def live_points(service: str) -> str:
        return sparkline(list(history.rates.get(service, [])))

    @app.get("/events", include_in_schema=False)
    async def events_page(request: Request) -> Response:
        if session_of(request) is None:
            return to(request, "/login")
        chosen = _filter(request)
        found = pages.events(
            agent, service=chosen["service"], kind=chosen["kind"], instance=chosen["instance"]
        )
        kinds = sorted(
            {e["kind"] for e in agent.state.events(agent.env, last=1000)} | {chosen["kind"]} - {""}
        )
        return render(
            request,
            "events.html",
            events=list(reversed(found)),
            after=max((e["id"] for e in found), default=_newest(agent)),
            chosen=chosen,
            kinds=kinds,
            services=sorted((await agent.status()).services),
        )

    @app.get("/events/live", include_in_schema=False)
    async def events_live(request: Request) -> Response:
        """Server-sent events: each new event that matches the filter, as it is recorded."""
        if session_of(request) is None:
            return text("log in first", 401)
        chosen = _filter(request)
        after = request.query_params.get("after", "0")
        start = int(after) if after.isdigit() and len(after) < 19 else _newest(agent)
        return streams.new_events(
            request,
            agent.stopping,
            start,
            lambda since: pages.events(
                agent,
                after=since,
                service=chosen["service"],
                kind=chosen["kind"],
                instance=chosen["instance"],
            ),
        )

    @app.get("/instances/{instance}/log", include_in_schema=False)
    async def log_page(request: Request, instance: str) -> Response:
        if session_of(request) is None:
            return to(request, "/login")
        file = await _log_of(agent, instance)
        if file is None:
            return text(f"no running instance {instance!r} with a log here", 404)
        return render(request, "log.html", instance=instance, lines=streams.tail(file, 200))

    @app.get("/instances/{instance}/log/live", include_in_schema=False)
    async def log_live(request: Request, instance: str) -> Response:
        """Server-sent events: the instance's new log lines as they are written (`herd logs -f`)."""
        if session_of(request) is None:
            return text("log in first", 401)
        file = await _log_of(agent, instance)
        if file is None:
            return text(f"no running instance {instance!r} with a log here", 404)
        return streams.follow_file(request, agent.stopping, file)

    @app.get("/quarantine/{instance}/log", include_in_schema=False)
    def quarantined_log(request: Request, instance: str) -> Response:
        """A quarantined instance's whole log, as it was kept."""
        if session_of(request) is None:
            return text("log in first", 401)
        try:
            kept = agent.quarantine.get(instance) if re.fullmatch(ID, instance) else None
        except HerdError:
            kept = None
        log = kept.path / "log" if kept is not None else None
        if log is None or not log.is_file():
            return text(f"no log kept for {instance!r}", 404)
        return Response(log.read_bytes(), media_type="text/plain; charset=utf-8")

    add_actions(app, Actions(agent, action, to, notices, in_background))
    return app


def _filter(request: Request) -> dict[str, str]:
    """The events filter from the query: service, kind and instance, each a name or empty."""
    out = {}
    for name in ("service", "kind", "instance"):
        value = request.query_params.get(name, "").strip()
        out[name] = value if re.fullmatch(ID, value) else ""
    return out


def _newest(agent: DashboardView) -> int:
    newest = agent.state.events(agent.env, last=1)
    return int(newest[-1]["id"]) if newest else 0


async def _log_of(agent: DashboardView, instance: str) -> Path | None:
    """The log file of a running instance of this environment, or None."""
    if not re.fullmatch(ID, instance) or instance not in {i.id for i in await agent.instances()}:
        return None
    file = agent.log_file(instance)
    return file if file is not None and file.is_file() else None
