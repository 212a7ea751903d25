"""The agent's drift checks: `herd verify` on a schedule, and what to do about a finding.

A drifted instance is reported (an event, a metric) and, with the service's `drift = "replace"`
(the default), marked so the fleet plans its quarantine like an unhealthy one: out of the pool,
replaced, stopped and kept. What drifted is copied at once into `.herd/run/drift/INSTANCE` (the
quarantine step moves it next to the rest of the evidence), and an unpacked image whose files
changed is moved aside, so that replacements start from a fresh unpack, not from the tampered one.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

from herdsman.deploy.verify import Finding, verify_instances
from herdsman.image.filelist import copy_differences

if TYPE_CHECKING:
    from herdsman.agent.daemon import Agent


class DriftChecker:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def loop(self) -> None:
        """`herd verify` every `[stack] verify_every` (0: never)."""
        agent = self.agent
        every = agent.deployment.project.stack.stack.verify_every
        while every > 0 and not agent.stopping.is_set():
            await asyncio.sleep(every)
            try:
                await self.check()
            except Exception as exc:  # reported; the next round tries again
                agent.state.event(agent.env, "drift", f"drift check failed: {exc!r}")

    async def check(self) -> list[tuple[Finding, str]]:
        """Check every running instance now and act on each finding as its service's `drift`
        says; returns the findings with what was done."""
        agent = self.agent
        out = []
        discard: set[str] = set()  # unpacked images whose files changed, moved aside once evidence is kept
        release = agent.state.current_release(agent.env)
        for finding in await verify_instances(agent.deployment):
            entry = release.services().get(finding.service) if release else None
            policy = entry.config.drift if entry else "report"
            if policy == "ignore":
                continue
            action = "reported"
            if policy == "replace":
                action = "being replaced" if finding.instance in agent.drifted else "replaced"
                if action == "replaced":
                    discard |= self._replace(finding)
            agent.counts.drift[finding.service] += 1
            agent.state.event(
                agent.env,
                "drift",
                f"{finding.instance} drifted ({action}): {finding.summary}",
                service=finding.service,
                instance=finding.instance,
                release=finding.release,
            )
            out.append((finding, action))
        for image in discard:
            agent.deployment.driver.discard_rootfs(image)
        return out

    def _replace(self, finding: Finding) -> set[str]:
        """Keep the evidence and mark the instance for quarantine; returns the images to move aside."""
        agent = self.agent
        stage = agent.home / "run" / "drift" / finding.instance
        images = set()
        for drift in finding.drifts:
            if drift.what == "file system":
                copy_differences(drift.root, list(drift.differences), stage)
                if drift.root is not None:
                    images.add(finding.image)
        agent.drifted[finding.instance] = f"drifted: {finding.summary}"
        seen = agent.fleet.get(finding.instance)
        if seen is not None:
            agent.fleet.observe(dataclasses.replace(seen, drifted=agent.drifted[finding.instance]))
        agent.wake.set()
        return images
