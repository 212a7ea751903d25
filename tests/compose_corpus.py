"""The compose corpus of `herd import` (tests/golden/compose/NAME/): ten stacks that look like
common real ones, each with its Dockerfiles and env files, an optional `environ.json` (the
variables of its environment: nothing is taken from the shell the tests run in) and the golden
`expected.herd.toml`.

Regenerate the golden files after a deliberate change, then read the diff:
`HERD_UPDATE_GOLDEN=1 .venv/bin/pytest -q -p no:cacheprovider tests/unit/test_compose_import.py -k golden`
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "golden" / "compose"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "compose.yaml").is_file())
GOLDEN = "expected.herd.toml"


def corpus_copy(name: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The case copied to ``tmp_path`` (without its golden file) and its environment."""
    target = tmp_path / name
    shutil.copytree(CORPUS / name, target, ignore=shutil.ignore_patterns(GOLDEN, "environ.json"))
    environ_file = CORPUS / name / "environ.json"
    environ = json.loads(environ_file.read_text()) if environ_file.is_file() else {}
    return target, environ
