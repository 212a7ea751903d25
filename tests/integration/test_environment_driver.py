"""The driver an environment runs on is recorded by its deploy (issue 17): `herd ps`, `logs` and
`down` find a stack started with `--driver docker` without being told again, and a deploy never
moves a running environment to another driver behind its instances' back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import hello_copy, herd, instances, stack_id, stop_project


def _docker_ids(root: Path) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=herd.stack-id={stack_id(root)}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


@pytest.mark.docker
def test_a_stack_deployed_with_driver_docker_is_found_without_it(tmp_path: Path, debian_hello: Path) -> None:
    root = tmp_path / "hello"
    hello_copy(root, template=debian_hello)
    toml = root / "herd.toml"
    toml.write_text(toml.read_text().replace('[environment.production]\ndriver = "docker"\n', ""))
    assert 'driver = "docker"' not in toml.read_text()  # herd.toml says process (the default)
    try:
        herd(root, "--driver", "docker", "deploy", timeout=300)
        assert len(_docker_ids(root)) == 2
        running = instances(root)  # no --driver: the recorded one
        assert len(running) == 2 and all(i["state"] == "running" for i in running)
        assert herd(root, "logs", "web").stdout.strip(), "herd logs found no line of the containers"
        refused = herd(root, "deploy", check=False)  # herd.toml says process: refused, nothing changes
        assert refused.returncode != 0
        assert "runs on the docker driver (2 instance(s))" in refused.stderr + refused.stdout
        assert len(_docker_ids(root)) == 2
        down = herd(root, "down").stdout
        assert "stopped 2 instance(s)" in down
        assert _docker_ids(root) == []
    finally:
        herd(root, "--driver", "docker", "down", check=False)
        stop_project(root)


def test_a_deploy_refuses_to_move_a_running_environment_to_another_driver(tmp_path: Path) -> None:
    root = tmp_path / "hello"
    hello_copy(root)
    toml = root / "herd.toml"
    try:
        herd(root, "deploy")  # on the process driver, recorded
        before = {i["id"] for i in instances(root)}
        assert len(before) == 2
        toml.write_text(toml.read_text() + '\n[environment.production]\ndriver = "docker"\n')
        refused = herd(root, "deploy", check=False)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0
        assert "runs on the process driver" in said and "herd.toml says docker" in said
        assert "herd --driver process deploy" in said  # the hint says both ways out
        assert {i["id"] for i in instances(root)} == before  # ps follows the record, not herd.toml
        herd(root, "--driver", "process", "deploy")  # keeping it where it runs is allowed
        assert len(instances(root)) == 2
        assert "stopped 2 instance(s)" in herd(root, "down").stdout  # down follows the record too
        toml.write_text(toml.read_text().replace('driver = "docker"', 'driver = "process"'))
        herd(root, "deploy")  # after down, herd.toml's choice applies again
        assert len(instances(root)) == 2
    finally:
        toml.write_text(toml.read_text().replace('driver = "docker"', 'driver = "process"'))
        stop_project(root)
