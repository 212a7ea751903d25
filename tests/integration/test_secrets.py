"""Secrets: rotated by a deploy and never undone by a heal; drift when an instance's value is not the
current one; checked before a release is recorded; kept out of readable files.

Where the agent's values come from: a deploy hands the values of the stack's declared secrets from
the deployer's environment over the agent's authenticated API; the agent holds them in memory only,
per release, and starts and heals that release's instances with them. An agent started afresh
(`herd up`) holds the values of its own environment.
"""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

from herdsman.state import StateStore
from tests.helpers import app_pid, herd, instances, wait_for

SECRET = 'secrets = ["API_KEY"]\n'


def with_secret(root: Path) -> None:
    toml = root / "herd.toml"
    toml.write_text(toml.read_text().replace("[service.web]\n", "[service.web]\n" + SECRET, 1))


def web(root: Path) -> list[str]:
    return sorted(i["id"] for i in instances(root) if i["service"] == "web" and i["state"] == "running")


def api_key_of(root: Path, instance: str) -> str:
    environ = Path(f"/proc/{app_pid(root, instance)}/environ").read_bytes().split(b"\0")
    values = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"API_KEY=")]
    return values[0].decode() if values else ""


def test_a_rotated_secret_is_not_undone_by_healing(hello_on_driver: tuple[Path, int]) -> None:
    root, _port = hello_on_driver
    with_secret(root)
    herd(root, "up", "-d", env={"API_KEY": "old"}, timeout=600)
    assert {api_key_of(root, i) for i in web(root)} == {"old"}

    out = herd(root, "deploy", env={"API_KEY": "new"}, timeout=300)
    assert "through it" in out.stdout
    before = web(root)
    assert {api_key_of(root, i) for i in before} == {"new"}

    victim = before[0]
    os.kill(app_pid(root, victim), signal.SIGKILL)
    after = wait_for(lambda: (ids := web(root)) and len(ids) == 2 and victim not in ids and ids, 60)
    assert {api_key_of(root, i) for i in after} == {"new"}, "the replacement has the rotated value"

    # the agent holds "new": nothing drifted, whatever the caller's environment says
    assert "every running instance matches" in herd(root, "verify", env={"API_KEY": ""}).stdout

    # an agent started afresh with another value: the instances no longer match it, are reported as
    # drifted and replaced with the value it holds
    pid = int((root / ".herd" / "run" / "agent-production.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 20)
    herd(root, "up", "-d", "--no-deploy", env={"API_KEY": "third"}, timeout=300)
    found = herd(root, "verify", check=False)
    assert found.returncode == 1 and "API_KEY: changed (secret)" in found.stdout, found.stdout
    assert "third" not in found.stdout and "new" not in found.stdout, "values are never shown"
    wait_for(
        lambda: (ids := web(root)) and len(ids) == 2 and {api_key_of(root, i) for i in ids} == {"third"}, 60
    )


def test_secret_digests_are_keyed_and_files_are_private(tmp_path: Path) -> None:
    from tests.helpers import hello_copy

    root = tmp_path / "hello"
    hello_copy(root)
    with_secret(root)
    try:
        herd(root, "deploy", env={"API_KEY": "s3cret"})
        home = root / ".herd"
        assert stat.S_IMODE((home / "run").stat().st_mode) == 0o700
        assert stat.S_IMODE((home / "state.db").stat().st_mode) == 0o600
        assert stat.S_IMODE((home / "secret.key").stat().st_mode) == 0o600
        records = list((home / "run" / "instances").glob("*.json"))
        assert len(records) == 2
        for record in records:
            assert stat.S_IMODE(record.stat().st_mode) == 0o600
            text = record.read_text()
            assert "s3cret" not in text and "hmac-sha256:" in text
            import hashlib

            assert hashlib.sha256(b"s3cret").hexdigest() not in text, "an unkeyed digest can be guessed"
    finally:
        herd(root, "down", check=False)


def test_a_missing_secret_fails_before_anything_is_recorded(tmp_path: Path) -> None:
    from tests.helpers import hello_copy

    root = tmp_path / "hello"
    hello_copy(root)
    with_secret(root)
    try:
        out = herd(root, "deploy", check=False, env={"API_KEY": ""})
        assert out.returncode == 1
        assert "API_KEY" in out.stderr and "nothing was recorded" in out.stderr, out.stderr
        assert StateStore(root / ".herd" / "state.db").releases("production") == []
        assert not list((root / ".herd" / "run" / "instances").glob("*.json"))
    finally:
        herd(root, "down", check=False)  # the router it started
