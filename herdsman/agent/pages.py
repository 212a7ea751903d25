"""What the dashboard's pages show, arranged for reading: the API's data, plus what only the agent
knows (the last health results, restarts, a rollout's steps, a canary's live numbers).

Kept apart from the routes (`dashboard.py`) so that the page's data can be read in one place; every
function here reads, none acts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from herdsman.agent.api import AgentView
from herdsman.agent.live import RateHistory, sparkline
from herdsman.deploy.diff import config_changes, layer_diff, layers_of
from herdsman.errors import HerdError

if TYPE_CHECKING:
    from herdsman.agent.observed import Observed
    from herdsman.image.oci import ImageStore
    from herdsman.state import Release

DIFF_KEEP = 40  # changed keys shown per release; a person reads `herd diff` for more
LAYERS_FOR = 10  # the newest releases whose changed images are compared layer by layer
LOG_TAIL = 15  # log lines shown per quarantined instance


class PageView(AgentView, Protocol):
    """What the pages ask of the agent beyond what the API asks."""

    observed: Observed

    def images(self) -> ImageStore: ...


async def overview(agent: PageView, history: RateHistory) -> dict[str, Any]:
    """What the overview shows."""
    now = time.time()
    status = await agent.status()
    restarts = agent.observed.counts.restarts
    results = agent.observed.watcher.results
    by_service: dict[str, list[dict[str, Any]]] = {name: [] for name in status.services}
    for i in sorted(await agent.instances(), key=lambda i: (i.service, i.id)):
        recent = list(results.get(i.id, []))[-8:]
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
                "checks": [
                    {
                        "ok": r.ok,
                        "title": f"{'ok' if r.ok else 'failed'}: {r.detail} ({r.seconds * 1000:.0f} ms)",
                    }
                    for r in recent
                ],
                "address": i.address,
                "node": i.node,  # a multi-node driver's; "" on one node
                "evicted": i.evicted,
                "uptime": _age(now - i.started) if i.state == "running" else i.detail,
            }
        )
    services = {
        name: {
            "status": s,
            "instances": by_service.get(name, []),
            "restarts": restarts.get(name, 0),
            "rate": round(history.latest(name), 1),
            "points": sparkline(list(history.rates.get(name, []))),
        }
        for name, s in status.services.items()
    }
    return {
        "status": status,
        "services": services,
        "releases": releases(agent, status.release, now, agent.images()),
        "quarantined": quarantined(agent, now),
        "events": [_event(e) for e in reversed(agent.state.events(agent.env, last=10))],
        **progress(agent),
    }


def releases(
    agent: AgentView, current: int | None, now: float, store: ImageStore | None = None
) -> list[dict[str, Any]]:
    """The timeline, newest first, each with what changed since the one before it (config keys;
    and, for the newest ``LAYERS_FOR``, the layers of each changed image, as `herd diff`)."""
    found = agent.state.releases(agent.env)
    out = []
    for index, r in enumerate(found):
        before = found[index - 1] if index else None
        compare = store if index >= len(found) - LAYERS_FOR else None
        out.append(
            {
                "number": r.number,
                "when": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created)),
                "ago": _age(now - r.created),
                "trigger": r.trigger,
                "by": r.by,
                "revision": r.revision or "-",
                "copy_of": r.copy_of,
                "status": r.status,
                "reason": r.reason,
                "current": r.number == current,
                "images": {name: (_short(e.image), e.image) for name, e in r.services().items()},
                "previous": before.number if before is not None else None,
                "changes": _changes(before, r),
                "layers": _layers(compare, before, r),
            }
        )
    return list(reversed(out))


def _changes(before: Release | None, after: Release) -> list[dict[str, str]]:
    if before is None:
        return []
    return [
        {"path": c.path, "before": c.before, "after": c.after}
        for c in config_changes(before.content, after.content)[:DIFF_KEEP]
    ]


def _layers(store: ImageStore | None, before: Release | None, after: Release) -> dict[str, Any]:
    """Per service whose image changed: layers shared, and those removed and added (short digest,
    size, what made it); None when an image is no longer in the store."""
    if store is None or before is None:
        return {}
    out: dict[str, Any] = {}
    old = before.services()
    for name, entry in sorted(after.services().items()):
        prior = old.get(name)
        if prior is None or prior.image == entry.image:
            continue
        try:
            sides = [layers_of(store.manifest(d), store.config(d)) for d in (prior.image, entry.image)]
        except (HerdError, OSError, KeyError, ValueError):
            out[name] = None
            continue
        diff = layer_diff(*sides)
        out[name] = {
            "same": len(diff.same),
            "removed": [(_short(x.digest), _size(x.size), x.made_by) for x in diff.removed],
            "added": [(_short(x.digest), _size(x.size), x.made_by) for x in diff.added],
        }
    return out


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size //= 1024
    return f"{size} GiB"


def quarantined(agent: AgentView, now: float) -> list[dict[str, Any]]:
    """Kept instances, newest first, with their record and the last lines of their log."""
    out = []
    for k in reversed(agent.quarantine.all()):
        record = k.record
        out.append(
            {
                "id": k.id,
                "service": k.service,
                "release": record.get("release", ""),
                "reason": str(record.get("reason", "")),
                "ago": _age(now - k.when),
                "image": _short(str(record.get("image", ""))),
                "health": [
                    ("ok" if h.get("ok") else f"failed ({h.get('detail', '')})")
                    for h in (record.get("health") or [])[-5:]
                ],
                "changed": len(k.changed_files()),
                "tail": k.log_tail(LOG_TAIL),
            }
        )
    return out


def progress(agent: AgentView) -> dict[str, Any]:
    """Rollouts in progress with their steps, and the canaries (live while judged)."""
    rollouts = []
    for r in agent.state.unfinished_rollouts(agent.env):
        steps = [
            {"seq": seq, "what": _step(step), "state": state, "detail": detail}
            for seq, step, state, detail in agent.state.steps(r.id)
        ]
        rollouts.append(
            {"id": r.id, "to": r.to_release, "from": r.from_release, "strategy": r.strategy, "steps": steps}
        )
    now = time.time()
    canaries = [
        {
            "service": c["service"],
            "release": c["release"],
            "weight": c["weight"],
            "state": c["state"],
            "decision": c["decision"],
            "for": _age(now - float(c["since"])),
            "reason": c["reason"],
            "baseline": c.get("baseline") or "serving",
            "sides": {side: _side(c["numbers"], side) for side in ("canary", "baseline")},
        }
        for c in agent.state.canaries(agent.env)
    ]
    return {"rollouts": rollouts, "canaries": canaries}


def _side(numbers: Mapping[str, Any], side: str) -> dict[str, str]:
    p50, p99 = numbers.get(f"{side}_p50_ms"), numbers.get(f"{side}_p99_ms")
    return {
        "requests": str(int(numbers.get(f"{side}_requests", 0))),
        "errors": f"{float(numbers.get(f'{side}_error_rate', 0.0)):.2%}",
        "p50": f"{p50:g} ms" if p50 is not None else "-",
        "p99": f"{p99:g} ms" if p99 is not None else "-",
    }


def _step(step: Mapping[str, Any]) -> str:
    op, service = str(step.get("op", "")), str(step.get("service", ""))
    instances = ", ".join(str(i) for i in step.get("instances", []))
    weight = f" at {step['weight']}%" if "weight" in step else ""
    return " ".join(x for x in (op + weight, service, instances) if x)


def events(
    agent: AgentView,
    *,
    after: int = 0,
    service: str = "",
    kind: str = "",
    instance: str = "",
    last: int = 100,
) -> list[dict[str, Any]]:
    """Events (the newest ``last``, or those after id ``after``) that match the filter, oldest first."""
    kinds = (kind,) if kind else ()
    found = (
        agent.state.events(agent.env, after=after, limit=500, kinds=kinds)
        if after
        else agent.state.events(agent.env, last=last if not (service or instance) else 1000, kinds=kinds)
    )
    kept = [
        _event(e)
        for e in found
        if (not service or e["service"] == service) and (not instance or e["instance"] == instance)
    ]
    return kept if after else kept[-last:]


def _event(e: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": e["id"],
        "when": time.strftime("%H:%M:%S", time.localtime(e["at"])),
        "kind": e["kind"],
        "service": e["service"],
        "instance": e["instance"],
        "message": e["message"],
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
