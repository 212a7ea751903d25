"""The pure parts of previews: names, a preview's release content, its own volume, log and
instance names (production's never change), and when a deploy to one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from herdsman.deploy.instances import id_base, is_preview, log_root, volume_key
from herdsman.deploy.preview_spec import (
    expired,
    host_routes,
    keep_until,
    kept,
    no_such,
    port_routes,
    preview_content,
    preview_env,
    preview_name,
    refusal,
    routed,
    url_of,
)
from herdsman.errors import DeployError

CONTENT = {
    "stack": "shop",
    "env": "production",
    "services": {
        "web": {
            "image": "sha256:" + "a" * 64,
            "config": {
                "replicas": 4,
                "route": {"listen": "127.0.0.1:8080", "host": "shop.example", "drain_timeout": "30s"},
                "scale": {"min": 2, "max": 8},
                "volumes": {"data": "/data"},
            },
        },
        "worker": {"image": "sha256:" + "b" * 64, "config": {"replicas": 3, "route": None}},
    },
    "volumes": ["data"],
}


def test_production_names_never_change_and_a_preview_has_its_own() -> None:
    home = Path("/p/.herd")
    for env in ("production", "staging"):
        assert not is_preview(env)
        assert volume_key(env, "data") == "data"
        assert log_root(home, env) == home / "logs"
        assert id_base(env, "web") == "web"
    env = preview_env("pr-42")
    assert env == "preview-pr-42" and is_preview(env) and preview_name(env) == "pr-42"
    assert volume_key(env, "data") == "preview-pr-42.data"  # "." is in no declared volume's name
    assert log_root(home, env) == home / "logs" / "@preview-pr-42"  # "@" is in no service's name
    assert id_base(env, "web") == "preview-pr-42-web"


@pytest.mark.parametrize("bad", ["", "PR", "1x", "a_b", "x" * 40, "a/b", "../x"])
def test_a_bad_preview_name_is_refused(bad: str) -> None:
    with pytest.raises(DeployError, match="not a preview name"):
        preview_env(bad)


def test_a_preview_runs_the_same_images_on_its_own_address() -> None:
    routes = port_routes(CONTENT, lambda: "127.0.0.1:5555")
    assert routes == {"web": {"listen": "127.0.0.1:5555", "host": None}}
    out = preview_content(CONTENT, "preview-a", routes, {"web": 1, "worker": 1})
    assert routed(CONTENT) == ["web"]
    assert out["env"] == "preview-a"
    web = out["services"]["web"]
    assert web["image"] == CONTENT["services"]["web"]["image"]  # the same bytes
    assert web["config"]["route"] == {"listen": "127.0.0.1:5555", "host": None, "drain_timeout": "30s"}
    assert web["config"]["replicas"] == 1 and web["config"]["scale"] is None
    assert web["config"]["volumes"] == {"data": "/data"}  # mounted under its own name by the driver
    assert out["services"]["worker"]["config"]["route"] is None
    assert CONTENT["services"]["web"]["config"]["route"]["listen"] == "127.0.0.1:8080"  # untouched
    assert url_of(routes["web"]) == "http://127.0.0.1:5555/"
    with pytest.raises(DeployError, match="no route was chosen"):
        preview_content(CONTENT, "preview-a", {}, {})


def test_a_preview_by_host_shares_production_listener_under_its_own_name() -> None:
    routes = host_routes(CONTENT, "pr-7")
    assert routes == {"web": {"listen": "127.0.0.1:8080", "host": "pr-7.preview.localhost"}}
    out = preview_content(CONTENT, "preview-pr-7", routes, {})
    route = out["services"]["web"]["config"]["route"]
    assert route["listen"] == "127.0.0.1:8080" and route["host"] == "pr-7.preview.localhost"
    assert out["services"]["web"]["config"]["replicas"] == 4  # no count given: the release's
    assert url_of(routes["web"]) == "http://pr-7.preview.localhost:8080/"


def test_a_deploy_to_an_expired_or_unknown_preview_is_refused() -> None:
    row = {"expires": 100.0}
    assert refusal("preview-a", row, 99.0) is None
    expired = refusal("preview-a", row, 130.0)
    assert expired is not None and "expired 30s ago" in expired.message
    unknown = refusal("preview-b", None, 0.0)
    assert unknown is not None and "herd preview create b" in (unknown.hint or "")


def test_a_kept_preview_outlives_its_ttl_until_its_keep_ends() -> None:
    """Expiry skips a kept preview: for good (no end), or until its keep ends, after which it is
    due at once if its time to live is up; a deploy to it is not refused while it is kept."""
    plain = {"expires": 100.0, "kept": 0, "kept_until": None}
    assert not expired(plain, 99.0) and expired(plain, 100.0) and not kept(plain, 500.0)
    forever = {**plain, "kept": 1}
    assert kept(forever, 1e12) and not expired(forever, 1e12)
    assert refusal("preview-a", forever, 1e12) is None
    until = {**plain, "kept": 1, "kept_until": 200.0}
    assert kept(until, 150.0) and not expired(until, 150.0)
    assert not kept(until, 200.0) and expired(until, 200.0)  # the keep ended: the next round takes it
    longer = {"expires": 300.0, "kept": 1, "kept_until": 200.0}
    assert not expired(longer, 250.0) and expired(longer, 300.0)  # a keep never shortens a TTL
    off = {**until, "kept": 0}  # `--off`: the keep no longer counts, whatever its old end
    assert not kept(off, 150.0) and expired(off, 150.0)


def test_how_long_a_keep_lasts_and_bad_durations() -> None:
    assert keep_until("2h", False, 1000.0) == 1000.0 + 7200
    assert keep_until(None, True, 1000.0) is None
    for duration, forever, said in [
        ("2x", False, "--for 2x"),
        ("0s", False, "a keep needs a time"),
        (None, False, "--for DURATION or --forever"),
        ("2h", True, "--for DURATION or --forever"),
    ]:
        with pytest.raises(DeployError) as refused:
            keep_until(duration, forever, 0.0)
        assert said in refused.value.message
        assert "--for 2h" in (refused.value.hint or "")  # an example


def test_no_such_preview_lists_the_ones_there_are() -> None:
    error = no_such("pr-9", ["pr-1", "pr-2"])
    assert "'pr-9'" in error.message and "pr-1, pr-2" in error.message
    assert "there is no preview at all" in no_such("pr-9", []).message


def test_a_preview_instance_is_handed_to_its_own_preview_keeper() -> None:
    """`herd quarantine add ID`: the agent finds the preview an instance belongs to by its id."""
    from herdsman.agent.previews import env_of

    envs = ["preview-pr", "preview-pr-1"]
    assert env_of("preview-pr-1-web-1-a3f01", envs) == "preview-pr-1"
    assert env_of("preview-pr-web-1-a3f01", envs) == "preview-pr"
    assert env_of("web-3-a3f01", envs) is None  # production's
    assert env_of("preview-other-web-1-a3f01", envs) is None
