"""`herd canary`: what the canaries of an environment are doing, and a person's promote or abort.

The judge (deploy/canary.py) writes its live numbers to the state store as it waits and reads a
decision from it, so these work the same whether the deploy runs in an agent or in a CLI process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from herdsman.errors import HerdError
from herdsman.facade.stack import environment_of
from herdsman.spec import Project, herd_home

if TYPE_CHECKING:
    from herdsman.state import StateStore


def _state(project: Project) -> StateStore:
    from herdsman.state import StateStore

    return StateStore(herd_home(project) / "state.db")


def canaries(project: Project, env: str | None = None) -> list[dict[str, Any]]:
    """Each service's latest canary: release, weight, state (judging, passed, failed, promoted),
    since when, the numbers of both sides so far and the verdict's reason."""
    return _state(project).canaries(environment_of(project, env))


def decide(project: Project, decision: str, service: str | None = None, env: str | None = None) -> list[str]:
    """Ask the canaries being judged (of ``service``, or all) to ``decision``: "promote" (every
    later step passes at once, then the rest rolls) or "abort" (fails now: traffic goes back to the
    current release). Returns the services asked; an error when none is being judged."""
    if decision not in ("promote", "abort"):
        raise HerdError(f"no decision {decision!r}", hint="promote or abort")
    name = environment_of(project, env)
    asked = _state(project).decide_canary(name, decision, service)
    if not asked:
        which = f"of {service} " if service else ""
        raise HerdError(
            f"no canary {which}is being judged in environment {name!r}",
            hint="`herd canary status` shows the last ones; a canary runs during `herd deploy` "
            'of a service with strategy = "canary"',
        )
    return asked
