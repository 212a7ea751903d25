"""The deploy lock names who holds it and what it is doing, so the one who waits can say so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from herdsman.deploy.environments import deploy_lock
from herdsman.deploy.pidlock import lock_holder
from herdsman.errors import DeployError


def test_a_deploy_meeting_a_prune_says_a_prune_holds_the_lock(tmp_path: Path) -> None:
    with deploy_lock(tmp_path, "production", task="prune"):
        assert lock_holder(tmp_path / "run" / "deploy-production.lock") == os.getpid()
        with pytest.raises(DeployError) as refused, deploy_lock(tmp_path, "production"):
            pass
    assert f"another prune of environment 'production' is running (pid {os.getpid()})" in str(refused.value)
    assert "--wait" in (refused.value.hint or "")
    assert lock_holder(tmp_path / "run" / "deploy-production.lock") is None
    with (  # free again, and a deploy says it is one
        deploy_lock(tmp_path, "production"),
        pytest.raises(DeployError, match="another deploy of"),
        deploy_lock(tmp_path, "production"),
    ):
        pass
