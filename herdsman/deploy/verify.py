"""Checking what runs against what was released: `herd verify`, and the agent on a schedule.

For each running instance, the spec its release gives (the same `instance_spec` a deploy starts it
from) goes to the driver, which compares the instance with it and with its image: the process
driver re-hashes the unpacked image against the per-file list recorded at unpack and reads the
app's command and environment from /proc; the docker driver compares the container's image,
command and environment and reads `docker diff`; the swarm driver checks a task on another node
through its service's and task's specs, and says what it could not check there (`Drift.checked`
False: reported as `unchecked`, never acted on). What to do about a finding (report, replace) is
the caller's business; nothing here changes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from herdsman.deploy.run import Deployment
from herdsman.drivers.base import UNKNOWN, Drift
from herdsman.errors import HerdError


@dataclass(frozen=True)
class Finding:
    instance: str
    service: str
    release: int
    image: str
    drifts: tuple[Drift, ...]
    unchecked: tuple[Drift, ...] = ()  # what the driver could not check (not a difference)

    @property
    def summary(self) -> str:
        return "; ".join(f"{d.what}: {d.detail}" for d in self.drifts)


async def verify_instances(deployment: Deployment) -> list[Finding]:
    """Every running instance of the environment that differs from its image or release, or that
    could not be checked fully (`unchecked`, with no `drifts` when nothing else was found)."""
    target = deployment.executor.target
    findings = []
    for state in await deployment.driver.list(target.selector):
        if state.state != "running":
            continue
        try:
            release = deployment.state.release(deployment.env, state.release)
        except HerdError:
            continue  # of no release: the agent reaps it
        entry = release.services().get(state.service)
        if entry is None:
            continue
        values = target.secrets_of(release.number)
        secrets = {name: values.get(name, UNKNOWN) for name in entry.config.secrets}
        spec = target.spec(state.id, state.service, release.number, entry, secrets)
        found = await deployment.driver.verify(state.id, spec)
        drifts = tuple(d for d in found if d.checked)
        unchecked = tuple(d for d in found if not d.checked)
        if found:
            findings.append(Finding(state.id, state.service, release.number, entry.image, drifts, unchecked))
    return findings
