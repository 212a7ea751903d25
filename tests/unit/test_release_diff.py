"""deploy/diff.py: what changed between two releases, by key path and by layer."""

from __future__ import annotations

from herdsman.deploy.diff import ABSENT, Layer, config_changes, layer_diff, layers_of


def content(image: str, **config: object) -> dict[str, object]:
    return {"services": {"web": {"image": image, "config": config}}}


def test_config_changes_go_down_to_the_leaf_and_name_both_values() -> None:
    old = content("sha256:a", env={"GREETING": "hi", "KEEP": "1"}, replicas=2)
    new = content("sha256:b", env={"GREETING": "hello", "KEEP": "1", "NEW": "x"}, replicas=2)
    changes = {c.path: (c.before, c.after) for c in config_changes(old, new)}
    assert changes == {
        "web.image": ("sha256:a", "sha256:b"),
        "web.env.GREETING": ("hi", "hello"),
        "web.env.NEW": (ABSENT, "x"),
    }
    assert config_changes(old, old) == []


def test_a_removed_service_shows_every_key_going() -> None:
    old = {
        "services": {
            "web": {"image": "a", "config": {"replicas": 1}},
            "worker": {"image": "w", "config": {"replicas": 1}},
        }
    }
    new = {"services": {"web": {"image": "a", "config": {"replicas": 1}}}}
    gone = [(c.path, c.after) for c in config_changes(old, new)]
    assert gone == [("worker.image", ABSENT), ("worker.replicas", ABSENT)]


def test_layers_pair_with_their_history_and_differences_are_found() -> None:
    manifest = {"layers": [{"digest": "sha256:base", "size": 10}, {"digest": "sha256:app1", "size": 2}]}
    config = {"history": [{"created_by": "base"}, {"empty_layer": True}, {"created_by": "herd: copy"}]}
    old = layers_of(manifest, config)
    assert old == [Layer("sha256:base", 10, "base"), Layer("sha256:app1", 2, "herd: copy")]
    new = [old[0], Layer("sha256:app2", 3, "herd: copy")]
    found = layer_diff(old, new)
    assert [x.digest for x in found.same] == ["sha256:base"]
    assert [x.digest for x in found.removed] == ["sha256:app1"]
    assert [x.digest for x in found.added] == ["sha256:app2"]
