"""`herd import compose.yaml` against a corpus of ten compose files that look like common stacks
(tests/golden/compose/NAME/compose.yaml, with their Dockerfiles and env files): each output is
byte for byte its golden `expected.herd.toml` and loads with herdsman's own loader.

The corpus and how to regenerate the golden files: tests/compose_corpus.py. `herd check` on
each output, through the real CLI: tests/integration/test_compose_cli.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from herdsman.facade.importers import import_compose
from herdsman.spec import parse_stack
from tests.compose_corpus import CASES, CORPUS, GOLDEN, corpus_copy


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
