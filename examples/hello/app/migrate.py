"""hello's data migration: the visit counter moves from a bare number to JSON ({"visits": N, "schema": 2}).

herdsman runs it once per deploy, from the new image, with the `counter` volume mounted, after
snapshotting the volume and before any new instance takes traffic ([service.web.migrate] in
herd.toml). It is idempotent (a counter already in the new format is left alone), and it writes
atomically. If it fails, herdsman restores the snapshot and the old release serves on.
"""

import fcntl
import json
import os
import sys
from pathlib import Path

DATA = Path(os.environ.get("DATA_DIR", "/data"))
COUNTER = DATA / "visits"
LOCK = DATA / ".visits.lock"  # the app's lock: the old release keeps counting while this runs


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        migrate()


def migrate() -> None:
    if not COUNTER.exists():
        print("no counter yet: nothing to migrate", flush=True)
        return
    text = COUNTER.read_text().strip() or "0"
    try:
        value = json.loads(text)
    except ValueError:
        sys.exit(f"the counter holds {text[:40]!r}, which is neither format: refusing to guess")
    if isinstance(value, dict) and value.get("schema") == 2:
        print(f"counter already at schema 2 ({value['visits']} visits)", flush=True)
        return
    tmp = COUNTER.with_name(".visits.migrating")
    tmp.write_text(json.dumps({"visits": int(value), "schema": 2}))
    os.replace(tmp, COUNTER)
    print(f"counter migrated to schema 2 ({int(value)} visits)", flush=True)


if __name__ == "__main__":
    main()
