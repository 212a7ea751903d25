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
from pathlib import Path

from herdsman.agent.observed import Observed
from herdsman.agent.periodic import every
from herdsman.deploy.run import Deployment
from herdsman.deploy.verify import Finding, verify_instances
from herdsman.image.filelist import copy_differences


class DriftChecker:
    def __init__(
        self, observed: Observed, deployment: Deployment, home: Path, stopping: asyncio.Event
    ) -> None:
        self.observed = observed
        self.deployment = deployment
        self.home = home
        self.stopping = stopping

    async def loop(self) -> None:
        """`herd verify` every `[stack] verify_every` (0: never)."""

        def failed(exc: Exception) -> None:
            self.deployment.state.event(self.deployment.env, "drift", f"drift check failed: {exc!r}")

        await every(
            lambda: self.deployment.project.stack.stack.verify_every, self.stopping, self.check, failed
        )

    async def check(self) -> list[tuple[Finding, str]]:
        """Check every running instance now and act on each finding as its service's `drift`
        says; returns the findings with what was done."""
        out = []
        discard: set[str] = set()  # unpacked images whose files changed, moved aside once evidence is kept
        release = self.deployment.state.current_release(self.deployment.env)
        for finding in await verify_instances(self.deployment):
            if not finding.drifts:  # only what could not be checked: said, not acted on
                out.append((finding, "reported"))
                continue
            entry = release.services().get(finding.service) if release else None
            policy = entry.config.drift if entry else "report"
            if policy == "ignore":
                continue
            action = "reported"
            if policy == "replace":
                action = "being replaced" if finding.instance in self.observed.drifted else "replaced"
                if action == "replaced":
                    discard |= self._replace(finding)
            self.observed.counts.drift[finding.service] += 1
            self.deployment.state.event(
                self.deployment.env,
                "drift",
                f"{finding.instance} drifted ({action}): {finding.summary}",
                service=finding.service,
                instance=finding.instance,
                release=finding.release,
            )
            out.append((finding, action))
        for image in discard:
            self.deployment.driver.discard_rootfs(image)
        return out

    def _replace(self, finding: Finding) -> set[str]:
        """Keep the evidence and mark the instance for quarantine; returns the images to move aside."""
        stage = self.home / "run" / "drift" / finding.instance
        images = set()
        for drift in finding.drifts:
            if drift.what == "file system":
                copy_differences(drift.root, list(drift.differences), stage)
                if drift.root is not None:
                    images.add(finding.image)
        self.observed.drifted[finding.instance] = f"drifted: {finding.summary}"
        seen = self.observed.fleet.get(finding.instance)
        if seen is not None:
            self.observed.fleet.observe(
                dataclasses.replace(seen, drifted=self.observed.drifted[finding.instance])
            )
        self.observed.wake.set()
        return images
