"""Rollouts applied for real on the process driver (router-less here; routed rollouts are tested with
the router): replacement, revert of a bad release with its log lines, resume by re-planning."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from herdsman.deploy.execute import Executor
from herdsman.deploy.release import release_content
from herdsman.deploy.target import Target
from herdsman.drivers.process import ProcessDriver
from herdsman.errors import DeployError
from herdsman.image.bake import bake, image_store
from herdsman.spec import load_project
from herdsman.state import StateStore
from tests.helpers import HELLO


def _project(tmp_path: Path, extra: str = "", app: str | None = None):  # type: ignore[no-untyped-def]
    root = tmp_path / "hello"
    if not root.exists():
        shutil.copytree(HELLO, root, ignore=shutil.ignore_patterns(".herd", "__pycache__"))
    text = (HELLO / "herd.toml").read_text().replace('[service.web.route]\nlisten = "127.0.0.1:8080"\n', "")
    text = text.replace("replicas = 2", "replicas = 3").replace('interval = "500ms"', 'interval = "200ms"')
    text = text.replace('timeout = "500ms"', 'timeout = "200ms"\ndeadline = "3s"')
    (root / "herd.toml").write_text(text + extra)
    if app is not None:
        (root / "app" / "app.py").write_text(app)
    return load_project(root / "herd.toml")


@pytest.fixture(autouse=True)
def _stop_leftovers(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Whatever a failing test leaves running is stopped: no orphan instance outlives the test."""
    yield
    home = tmp_path / "hello" / ".herd"
    if (home / "images").exists():
        driver = ProcessDriver(home, image_store(load_project(tmp_path / "hello" / "herd.toml")))
        for instance in driver.list_now():
            asyncio.run(driver.stop(instance.id, 1))


def _setup(project):  # type: ignore[no-untyped-def]
    home = project.root / ".herd"
    store = image_store(project)
    driver = ProcessDriver(home, store)
    state = StateStore(home / "state.db")
    target = Target("production", project.stack.name, project.stack_id, home, store, {})
    return Executor(target, state, driver, None), state, driver


async def _release(state, project, executor):  # type: ignore[no-untyped-def]
    images = {r.service: r.image.digest for r in bake(project)}
    release = state.create_release(
        "production", release_content(project, "production", images), trigger="test"
    )
    await executor.rollout(release, state.current_release("production"))
    return release


def test_deploy_then_replace_every_instance(tmp_path: Path) -> None:
    async def scenario() -> None:
        project = _project(tmp_path)
        executor, state, driver = _setup(project)
        first = await _release(state, project, executor)
        instances = await driver.list()
        assert len(instances) == 3 and {i.release for i in instances} == {first.number}
        project = _project(tmp_path, app=(HELLO / "app" / "app.py").read_text() + "\n# v2\n")
        second = await _release(state, project, executor)
        instances = await driver.list()
        assert len(instances) == 3 and {i.release for i in instances} == {second.number}
        assert all(i.state == "running" for i in instances)
        assert state.release("production", 1).status == "superseded"
        assert state.release("production", 2).status == "deployed"
        for instance in instances:
            await driver.stop(instance.id, 5)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("import sys\nprint('boom: missing DATABASE_URL', flush=True)\nsys.exit(3)\n", "crashed"),
        ("import time\nprint('never listening', flush=True)\ntime.sleep(60)\n", "not healthy within 3s"),
    ],
)
def test_a_bad_release_is_reverted_and_the_old_one_keeps_running(
    tmp_path: Path, app: str, expected: str
) -> None:
    async def scenario() -> None:
        project = _project(tmp_path)
        executor, state, driver = _setup(project)
        await _release(state, project, executor)
        before = {i.id for i in await driver.list()}
        bad = _project(tmp_path, app=app)
        with pytest.raises(DeployError, match=expected) as failure:
            await _release(state, bad, executor)
        if "boom" in app:
            assert "boom: missing DATABASE_URL" in failure.value.message, (
                "the error shows the log's last lines"
            )
        after = await driver.list()
        assert {i.id for i in after} == before and all(i.state == "running" for i in after)
        assert state.release("production", 2).status == "failed"
        assert state.current_release("production").number == 1  # type: ignore[union-attr]
        logs = list((project.root / ".herd" / "logs" / "web").glob("web-2-*.log"))
        assert logs, "the failed instance's log is kept"
        for instance in after:
            await driver.stop(instance.id, 5)

    asyncio.run(scenario())
