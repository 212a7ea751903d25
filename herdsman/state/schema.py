"""The state store's schema, as numbered migrations applied in order.

Releases are immutable by construction: a trigger aborts any UPDATE or DELETE of a release row.
What changes about a release over time (deployed, failed, rolled back) is its status, kept in a
separate table, so the record of what was released can never be rewritten. `by_whom` is who asked
for the release (user@host of the `herd` that deployed; '' in releases older than the column).
Replica counts set at run time (`herd scale`, the autoscaler) are runtime state, not a release:
they live in `scale`. `service_notes` holds what the agent wants `herd ps` to show about a service
(e.g. a crash-looping image in backoff).
`generations` counts, per environment, every change made to what runs by someone holding the deploy
lock (a rollout, a restore, a `herd down`): the agent compares it with the value it last listed at,
so it never heals from a picture of the fleet that a deploy has made stale.
`previews` holds each short-lived environment `herd preview create` made, with its expiry: the
agent's reconcile loop (and every `herd preview` command) removes the expired ones, so cleanup
never depends on someone remembering it; one that is `kept` (`herd preview keep`) stays past its
expiry until `kept_until` (NULL: as long as it is kept).
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    """
    CREATE TABLE releases (
        env TEXT NOT NULL,
        number INTEGER NOT NULL,
        created REAL NOT NULL,
        trigger TEXT NOT NULL,
        revision TEXT NOT NULL DEFAULT '',
        content TEXT NOT NULL,
        content_digest TEXT NOT NULL,
        copy_of INTEGER,
        PRIMARY KEY (env, number)
    );
    CREATE TRIGGER releases_no_update BEFORE UPDATE ON releases
    BEGIN SELECT RAISE(ABORT, 'releases are immutable'); END;
    CREATE TRIGGER releases_no_delete BEFORE DELETE ON releases
    BEGIN SELECT RAISE(ABORT, 'releases are immutable'); END;

    CREATE TABLE release_status (
        env TEXT NOT NULL,
        number INTEGER NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        updated REAL NOT NULL,
        PRIMARY KEY (env, number)
    );

    CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        env TEXT NOT NULL,
        from_release INTEGER,
        to_release INTEGER NOT NULL,
        strategy TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        started REAL NOT NULL,
        finished REAL
    );

    CREATE TABLE rollout_steps (
        rollout INTEGER NOT NULL REFERENCES rollouts(id),
        seq INTEGER NOT NULL,
        step TEXT NOT NULL,
        state TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        updated REAL NOT NULL,
        PRIMARY KEY (rollout, seq)
    );

    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        env TEXT NOT NULL,
        kind TEXT NOT NULL,
        service TEXT NOT NULL DEFAULT '',
        instance TEXT NOT NULL DEFAULT '',
        release INTEGER,
        message TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_env ON events (env, id);
    """,
    """
    CREATE TABLE scale (
        env TEXT NOT NULL,
        service TEXT NOT NULL,
        replicas INTEGER NOT NULL,
        mode TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (env, service)
    );
    CREATE TABLE service_notes (
        env TEXT NOT NULL,
        service TEXT NOT NULL,
        note TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (env, service)
    );
    """,
    """
    CREATE TABLE generations (
        env TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    """,
    """
    CREATE TABLE environment_drivers (
        env TEXT PRIMARY KEY,
        driver TEXT NOT NULL,
        chosen REAL NOT NULL
    );
    """,
    """
    CREATE TABLE canaries (
        env TEXT NOT NULL,
        service TEXT NOT NULL,
        release INTEGER NOT NULL,
        weight INTEGER NOT NULL,
        state TEXT NOT NULL,
        since REAL NOT NULL,
        updated REAL NOT NULL,
        numbers TEXT NOT NULL DEFAULT '{}',
        reason TEXT NOT NULL DEFAULT '',
        decision TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (env, service)
    );
    """,
    """
    ALTER TABLE releases ADD COLUMN by_whom TEXT NOT NULL DEFAULT '';
    """,
    """
    CREATE TABLE previews (
        name TEXT PRIMARY KEY,
        env TEXT NOT NULL,
        source TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        routes TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL
    );
    """,
    """
    ALTER TABLE canaries ADD COLUMN baseline TEXT NOT NULL DEFAULT '';
    """,
    """
    ALTER TABLE previews ADD COLUMN kept INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE previews ADD COLUMN kept_until REAL;
    """,
]
