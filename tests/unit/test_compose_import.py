"""`herd import compose.yaml` against a corpus of ten compose files that look like common stacks
(tests/golden/compose/NAME/compose.yaml, with their Dockerfiles and env files): each output is
byte for byte its golden `expected.herd.toml` and loads with herdsman's own loader.

Regenerate the golden files after a deliberate change:
`HERD_UPDATE_GOLDEN=1 .venv/bin/pytest -q -p no:cacheprovider tests/unit/test_compose_import.py -k golden`
(then read the diff). `environ.json` beside a compose file holds the variables of its environment;
nothing is taken from the environment the tests run in. `herd check` on each output, through the
real CLI: tests/integration/test_compose_cli.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from herdsman.facade.importers import import_compose
from herdsman.spec import parse_stack

CORPUS = Path(__file__).resolve().parent.parent / "golden" / "compose"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "compose.yaml").is_file())
GOLDEN = "expected.herd.toml"


def corpus_copy(name: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The case copied to ``tmp_path`` (without its golden file) and its environment."""
    target = tmp_path / name
    shutil.copytree(CORPUS / name, target, ignore=shutil.ignore_patterns(GOLDEN, "environ.json"))
    environ_file = CORPUS / name / "environ.json"
    environ = json.loads(environ_file.read_text()) if environ_file.is_file() else {}
    return target, environ


def test_the_corpus_has_ten_stacks() -> None:
    assert len(CASES) == 10


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str, tmp_path: Path) -> None:
    project, environ = corpus_copy(name, tmp_path)
    result = import_compose(project / "compose.yaml", environ=environ)
    text = result.written.read_text()
    golden = CORPUS / name / GOLDEN
    if os.environ.get("HERD_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text(), f"{name}: regenerate with HERD_UPDATE_GOLDEN=1 and read the diff"
    stack = parse_stack(text, file=str(result.written))
    assert sorted(stack.service) == sorted(result.services)
    assert sorted(stack.volume) == sorted(result.volumes)
    # every gap is listed at the end of the file, with its why
    for gap in result.gaps:
        assert f"# {gap}" in text
