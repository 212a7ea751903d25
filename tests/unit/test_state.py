"""The state store: immutable numbered releases, statuses, write-ahead rollout steps, events."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from herdsman.errors import DeployError
from herdsman.state import StateStore, asker
from herdsman.state.schema import MIGRATIONS


def test_releases_are_numbered_per_environment_and_immutable(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    one = store.create_release("production", {"services": {"web": {"image": "sha256:a"}}}, trigger="deploy")
    two = store.create_release("production", {"services": {"web": {"image": "sha256:b"}}}, trigger="deploy")
    preview = store.create_release("preview-1", {"services": {}}, trigger="deploy")
    assert (one.number, two.number, preview.number) == (1, 2, 1)
    assert one.status == "pending" and one.content_digest.startswith("sha256:")
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        store._db.execute("UPDATE releases SET content = '{}' WHERE number = 1")
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        store._db.execute("DELETE FROM releases")
    with pytest.raises(DeployError, match="no release 7"):
        store.release("production", 7)


def test_current_and_previous_good(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    for _ in range(3):
        store.create_release("production", {"services": {}}, trigger="deploy")
    store.set_release_status("production", 1, "superseded")
    store.set_release_status("production", 2, "deployed")
    store.set_release_status("production", 3, "failed", "never healthy")
    assert store.current_release("production").number == 2  # type: ignore[union-attr]
    assert store.previous_good("production", before=2).number == 1  # type: ignore[union-attr]
    assert store.release("production", 3).reason == "never healthy"
    copy = store.create_release(
        "production", store.release("production", 1).content, trigger="rollback", copy_of=1
    )
    assert copy.number == 4 and copy.copy_of == 1


def test_rollout_steps_are_written_ahead_and_survive_reopening(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    rollout = store.start_rollout("production", 1, 2, "rolling", [{"op": "start"}, {"op": "stop"}])
    store.mark_step(rollout.id, 0, "started")
    store.close()
    reopened = StateStore(tmp_path / "state.db")
    (unfinished,) = reopened.unfinished_rollouts("production")
    assert unfinished.id == rollout.id
    assert [(seq, state) for seq, _, state, _ in reopened.steps(rollout.id)] == [
        (0, "started"),
        (1, "pending"),
    ]
    reopened.finish_rollout(rollout.id, "done")
    assert reopened.unfinished_rollouts("production") == []


def test_events_in_order(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    first = store.event("production", "deploy", "started", release=2, service="web", count=3)
    store.event("production", "deploy", "finished", release=2)
    store.event("staging", "deploy", "other env")
    events = store.events("production")
    assert [e["message"] for e in events] == ["started", "finished"]
    assert events[0]["data"] == {"count": 3} and events[0]["service"] == "web"
    assert [e["message"] for e in store.events("production", after=first)] == ["finished"]


def test_the_last_n_events_of_a_kind_are_n_of_that_kind(tmp_path: Path) -> None:
    """`herd events --kind heal -n 2`: the filter comes before the limit."""
    store = StateStore(tmp_path / "state.db")
    for n in range(3):
        store.event("production", "heal", f"heal {n}")
    for n in range(10):
        store.event("production", "scale", f"scale {n}")
    last = store.events("production", last=2, kinds=("heal",))
    assert [e["message"] for e in last] == ["heal 1", "heal 2"]
    assert len(store.events("production", kinds=("heal", "scale"))) == 13


def test_a_release_records_who_asked_for_it_and_older_stores_gain_the_column(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    mine = store.create_release("production", {"services": {}}, trigger="herd deploy", by="ana@build-1")
    assert mine.by == "ana@build-1" and store.release("production", 1).by == "ana@build-1"
    assert store.create_release("production", {"services": {}}, trigger="test").by == ""
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        store._db.execute("UPDATE releases SET by_whom = 'someone else'")
    who = asker()
    assert "@" in who and who.split("@")[1], who
    store.close()
    # a store made before the column: its releases read as asked by nobody recorded
    old = sqlite3.connect(tmp_path / "old.db")
    version = 5  # the migrations before by_whom
    for script in MIGRATIONS[:version]:
        old.executescript(script)
    old.execute("INSERT INTO releases VALUES ('production', 1, 0, 'herd deploy', '', '{}', 'sha256:x', NULL)")
    old.execute("INSERT INTO release_status VALUES ('production', 1, 'deployed', '', 0)")
    old.execute(f"PRAGMA user_version = {version}")
    old.commit()
    old.close()
    assert StateStore(tmp_path / "old.db").release("production", 1).by == ""


def test_previews_are_recorded_with_their_expiry_and_survive_reopening(tmp_path: Path) -> None:
    """Migration 7: a preview is recorded (creating) before it starts, once per name; its state
    moves on; the record goes last; an older state.db gains the table on open."""
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)  # a store made before previews existed: the migrations before
    for script in MIGRATIONS[:6]:
        old.executescript(script)
    old.execute("PRAGMA user_version = 6")
    old.close()
    state = StateStore(path)
    route = {"web": {"listen": "127.0.0.1:5555", "host": None}}
    assert state.add_preview("pr-1", "preview-pr-1", "release 3 of production", 1000.0, route)
    assert not state.add_preview("pr-1", "preview-pr-1", "again", 2000.0, {})  # one per name
    state.set_preview_state("pr-1", "ready")
    state.close()
    state = StateStore(path)
    row = state.preview("pr-1")
    assert row is not None and row["state"] == "ready" and row["expires"] == 1000.0
    assert row["routes"] == route and row["source"] == "release 3 of production"
    assert [p["name"] for p in state.previews()] == ["pr-1"]
    state.drop_preview("pr-1")
    assert state.preview("pr-1") is None and state.previews() == []
    state.close()


def test_a_preview_is_kept_and_an_older_store_gains_the_columns(tmp_path: Path) -> None:
    """Migration 9: a preview made before `kept` existed reads as not kept; a keep is recorded
    with its end (None: until removed) and taken back; keeping an unknown preview says so."""
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    for script in MIGRATIONS[:7]:
        old.executescript(script)
    old.execute("INSERT INTO previews VALUES ('pr-1', 'preview-pr-1', 'release 1', 0, 50, '{}', 'ready')")
    old.execute("PRAGMA user_version = 7")
    old.commit()
    old.close()
    state = StateStore(path)
    row = state.preview("pr-1")
    assert row is not None and row["kept"] == 0 and row["kept_until"] is None
    assert state.keep_preview("pr-1", True, 500.0)
    assert (state.preview("pr-1") or {})["kept_until"] == 500.0
    assert state.keep_preview("pr-1", True, None)  # for good
    row = state.preview("pr-1")
    assert row is not None and row["kept"] == 1 and row["kept_until"] is None
    assert state.keep_preview("pr-1", False)
    assert (state.preview("pr-1") or {})["kept"] == 0
    assert not state.keep_preview("pr-2", True)
    assert state.add_preview("pr-3", "preview-pr-3", "release 1", 10.0, {})  # made after migration 9
    row = state.preview("pr-3")
    assert row is not None and row["kept"] == 0 and row["state"] == "creating"
    state.close()
