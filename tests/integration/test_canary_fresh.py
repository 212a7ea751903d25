"""A canary judged against a FRESH baseline (issue 16): as many new instances of the serving release
as the canary has, at the canary's weight, so both sides are as warm; real processes behind the
real router. A bad release is aborted against it with no failed request outside the canary's
share and the fresh baseline gone after; a good one promotes to exactly its replicas; where the
pool or the weights do not allow a fresh baseline, the verdict says it used the serving
instances and why; a new agent after a SIGKILL mid-canary reuses the fresh baseline, no orphan."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from tests.helpers import Load, herd, instances, stop_project, wait_for
from tests.integration.test_canary import (
    _deploy_in_background,
    _judging,
    canary_events,
    project,
    releases_running,
)

FRESH_ID = r"web-1-[0-9a-f]{4}b\d+"  # an instance of release 1 started as a canary's fresh baseline


def fresh_started(root: Path) -> list[str]:
    """The fresh baseline instances ever started (from the instance events), oldest first."""
    out = herd(root, "events", "--kind", "instance", "-n", "200").stdout
    return sorted(set(re.findall(rf"started ({FRESH_ID})", out)))


def running_ids(root: Path) -> set[str]:
    return {i["id"] for i in instances(root) if i["state"] == "running"}


def test_a_bad_release_is_aborted_against_a_fresh_baseline_that_is_gone_after(tmp_path: Path) -> None:
    root = tmp_path / "app"
    port = project(root)
    try:
        herd(root, "deploy")  # release 1: no canary
        project(root, fail_every=10)  # release 2 answers 500 to one request in ten
        with Load(f"http://127.0.0.1:{port}/", workers=4) as load:
            result = herd(root, "deploy", check=False, timeout=180)
        said = result.stdout + result.stderr
        assert result.returncode != 0, said + herd(root, "events", "-n", "40").stdout
        assert re.search(
            r"the canary of web failed at 20% of requests: error rate .*\(baseline: fresh\)", said
        )
        fresh = fresh_started(root)
        assert len(fresh) == 1, fresh  # one canary instance, one fresh baseline instance
        assert fresh[0] in said  # "starting a fresh baseline of release 1: ..."
        # zero failed requests outside the canary's share: every failure is release 2's own
        assert load.failures and all("release 2 failed" in f for f in load.failures), load.failures[:5]
        assert len(load.failures) / len(load.served) <= 0.2
        assert releases_running(root) == {"1"} and len(instances(root)) == 2
        assert fresh[0] not in running_ids(root)  # stopped with the canary: not needed any more
        lines = [e["line"] for e in canary_events(root)]
        assert any(
            "canary at 20%: fail: error rate" in line and "(baseline: fresh)" in line for line in lines
        )
        status = herd(root, "canary", "status").stdout
        assert re.search(r"web\s+2\s+20%\s+failed", status) and "fresh" in status, status
        baseline = re.findall(r"(\d+) req,", status)
        assert len(baseline) == 2 and int(baseline[1]) >= 30, status  # the fresh side was judged on
    finally:
        stop_project(root)


def test_a_good_release_promotes_and_leaves_exactly_its_replicas(tmp_path: Path) -> None:
    """With zero failed requests; its verdicts in the events (the one good-release canary test)."""
    root = tmp_path / "app"
    port = project(root)
    try:
        herd(root, "deploy")
        project(root, note="a new release, as fast as the old one")
        with Load(f"http://127.0.0.1:{port}/", workers=4) as load:
            out = herd(root, "deploy", timeout=180).stdout
        assert re.search(r"canary at 20% passed: .*\(baseline: fresh\)", out), out
        assert load.failures == []
        assert releases_running(root) == {"2"} and len(instances(root)) == 2
        fresh = fresh_started(root)
        assert len(fresh) == 1 and not set(fresh) & running_ids(root)
        retired = herd(root, "events", "--kind", "instance", "-n", "200").stdout
        assert f"retired {fresh[0]}" in retired
        lines = [e["line"] for e in canary_events(root)]
        assert any("canary at 20%: pass" in line for line in lines), lines
        event = herd(root, "events", "--kind", "canary", "-n", "1").stdout
        assert "error rate 0.00%" in event
    finally:
        stop_project(root)


def test_where_no_fresh_baseline_fits_the_verdict_says_which_baseline_and_why(tmp_path: Path) -> None:
    root = tmp_path / "app"
    port = project(root)
    toml = root / "herd.toml"
    try:
        herd(root, "deploy")
        project(root, note="2")
        toml.write_text(
            toml.read_text().replace("[service.web.canary]\n", '[service.web.canary]\nbaseline = "serving"\n')
        )
        with Load(f"http://127.0.0.1:{port}/", workers=4) as load:
            out = herd(root, "deploy", timeout=180).stdout
        assert '(baseline: serving (service.web.canary.baseline = "serving"))' in out, out
        project(root, note="3")
        toml.write_text(toml.read_text().replace("canary_weights = [20, 100]", "canary_weights = [60, 100]"))
        with Load(f"http://127.0.0.1:{port}/", workers=4) as more:
            out = herd(root, "deploy", timeout=180).stdout
        assert "(baseline: serving (every canary weight short of 100 is 50% or more" in out, out
        assert load.failures == [] and more.failures == []
        assert fresh_started(root) == [] and not re.search(
            r"web-2-[0-9a-f]{4}b\d+", herd(root, "events", "-n", "200").stdout
        )
        assert releases_running(root) == {"3"} and len(instances(root)) == 2
        assert "serving (every canary weight" in herd(root, "canary", "status").stdout
    finally:
        stop_project(root)


def test_an_agent_killed_mid_canary_resumes_with_the_same_fresh_baseline(tmp_path: Path) -> None:
    """SIGKILL of the agent while the canary is judged against its fresh baseline: the new agent
    plans again from what runs, knows the fresh baseline by its label (reused, not started
    again), promotes, and leaves no orphan."""
    root = tmp_path / "app"
    port = project(root)
    toml = root / "herd.toml"
    try:
        herd(root, "up", "-d", timeout=120)
        project(root, note="release 2")
        toml.write_text(toml.read_text().replace('canary_pause = "4s"', 'canary_pause = "6s"'))
        with Load(f"http://127.0.0.1:{port}/", workers=2) as load:
            deploying = _deploy_in_background(root)
            wait_for(lambda: _judging(root), seconds=60)
            fresh = fresh_started(root)
            assert len(fresh) == 1 and fresh[0] in running_ids(root), fresh
            agent = int((root / ".herd" / "run" / "agent-production.pid").read_text())
            os.kill(agent, signal.SIGKILL)
            out, _ = deploying.communicate(timeout=60)
            assert deploying.returncode != 0, out  # its agent died under it
            assert fresh[0] in running_ids(root)  # the data plane went on: nothing was stopped
            herd(root, "up", "-d", "--no-deploy", timeout=120)  # resumes the rollout it left
            wait_for(lambda: releases_running(root) == {"2"} and len(instances(root)) == 2, seconds=90)
        assert load.failures == []
        assert fresh_started(root) == fresh  # reused by the new agent, never a second one
        assert not set(fresh) & running_ids(root)
        lines = [e["line"] for e in canary_events(root)]
        assert any("canary at 20%: pass" in line and "(baseline: fresh)" in line for line in lines), lines
        assert "release 2 deployed" in herd(root, "events", "--kind", "rollout").stdout
    finally:
        stop_project(root)


CRASH = """import sys
if os.environ.get("CRASH_IF") and os.path.exists(os.environ["CRASH_IF"]):
    sys.exit("port 8000 is taken")
"""


def crashing_project(root: Path, *, note: str, crash_if: str) -> int:
    """The canary project, whose instances exit at start while ``crash_if`` exists (a path in
    its volume): new instances of that release cannot start, those running go on serving."""
    port = project(root, note=note)
    app = root / "app" / "app.py"
    app.write_text(app.read_text().replace("from http.server", CRASH + "from http.server", 1))
    toml = root / "herd.toml"
    text = toml.read_text().replace('NOTE = "', f'CRASH_IF = "{crash_if}", NOTE = "', 1)
    text = text.replace("replicas = 2\n", 'replicas = 2\nvolumes = { data = "/data" }\n', 1)
    toml.write_text(text + '\n[volume.data]\ndescription = "where the test says: no more starts"\n')
    return port


def test_a_fresh_baseline_that_cannot_start_leaves_the_serving_one_and_says_why(tmp_path: Path) -> None:
    """The pool does not allow a fresh baseline (here: release 1 can no longer start, as when its
    port is taken): it is stopped, and the canary is judged against the serving instances, every
    verdict saying so and why."""
    root = tmp_path / "app"
    port = crashing_project(root, note="1", crash_if="/data/stop")
    try:
        herd(root, "deploy")
        (root / ".herd" / "volumes" / "data" / "stop").write_text("no more starts of release 1\n")
        crashing_project(root, note="2", crash_if="")
        with Load(f"http://127.0.0.1:{port}/", workers=4) as load:
            out = herd(root, "deploy", timeout=180).stdout
        assert "the fresh baseline could not start: instance web-1-" in out, out
        assert re.search(
            r"canary at 20% passed: .*\(baseline: serving \(the fresh baseline could not start", out
        )
        assert load.failures == []
        assert releases_running(root) == {"2"} and len(instances(root)) == 2
        fresh = fresh_started(root)
        assert len(fresh) == 1 and not set(fresh) & running_ids(root)
        lines = [e["line"] for e in canary_events(root)]
        assert any("(baseline: serving (the fresh baseline could not start" in line for line in lines), lines
    finally:
        stop_project(root)
