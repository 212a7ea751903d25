"""`herd import` through the real CLI: every output of the compose corpus passes `herd check`
(the same command a user runs next), an existing herd.toml is kept without --force, and bad input
is one line with the file, the key path and a hint, not a traceback."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.compose_corpus import CASES, CORPUS, GOLDEN, corpus_copy


def herd(cwd: Path, *args: str, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`herd ARGS` in ``cwd`` with only ``environ`` as variables (nothing leaks from the test's shell)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8", **(environ or {})}
    return subprocess.run(
        [sys.executable, "-m", "herdsman", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


@pytest.mark.parametrize("name", CASES)
def test_import_then_check(name: str, tmp_path: Path) -> None:
    project, environ = corpus_copy(name, tmp_path)
    result = herd(project, "import", "compose.yaml", environ=environ)
    assert result.returncode == 0, result.stderr
    assert f"wrote {project / 'herd.toml'}" in result.stdout
    assert (project / "herd.toml").read_text() == (CORPUS / name / GOLDEN).read_text()
    checked = herd(project, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("ok ")


def test_an_existing_herd_toml_is_kept_without_force(tmp_path: Path) -> None:
    project, environ = corpus_copy("flask-redis", tmp_path)
    (project / "herd.toml").write_text("# mine\n")
    refused = herd(project, "import", "compose.yaml", environ=environ)
    assert refused.returncode != 0 and "already exists" in refused.stderr and "--force" in refused.stderr
    assert (project / "herd.toml").read_text() == "# mine\n"
    forced = herd(project, "import", "compose.yaml", "--force", environ=environ)
    assert forced.returncode == 0, forced.stderr
    assert "[service.web]" in (project / "herd.toml").read_text()


def test_output_in_a_directory_above_keeps_paths_relative_to_it(tmp_path: Path) -> None:
    project, environ = corpus_copy("django-postgres", tmp_path)
    result = herd(tmp_path, "import", "django-postgres/compose.yaml", "-o", "herd.toml", environ=environ)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "herd.toml").read_text()
    assert 'requirements = "django-postgres/app/requirements.txt"' in text
    assert herd(tmp_path, "check").returncode == 0
    below = herd(project, "import", "compose.yaml", "-o", "sub/herd.toml", environ=environ)
    assert below.returncode != 0 and "or a directory above it" in below.stderr


def test_a_required_variable_is_a_clear_error(tmp_path: Path) -> None:
    project, _ = corpus_copy("wordpress-mysql", tmp_path)
    result = herd(project, "import", "compose.yaml")
    assert result.returncode != 0
    assert (
        "compose.yaml: services.db.environment[2]: required variable WORDPRESS_DB_PASSWORD" in result.stderr
    )
    assert "Traceback" not in result.stderr and "hint" in result.stderr
    assert not (project / "herd.toml").exists()


def test_dotenv_beside_the_compose_file_and_the_environment_wins(tmp_path: Path) -> None:
    project, environ = corpus_copy("node-mongo", tmp_path)
    assert herd(project, "import", "compose.yaml", environ=environ).returncode == 0
    assert "mongodb://127.0.0.1:27017/catalog" in (project / "herd.toml").read_text()  # from .env
    result = herd(project, "import", "compose.yaml", "--force", environ={"MONGO_DB": "orders"})
    assert result.returncode == 0, result.stderr
    assert "mongodb://127.0.0.1:27017/orders" in (project / "herd.toml").read_text()


def test_secret_values_are_never_written(tmp_path: Path) -> None:
    project, environ = corpus_copy("django-postgres", tmp_path)
    assert herd(project, "import", "compose.yaml", environ=environ).returncode == 0
    text = (project / "herd.toml").read_text()
    assert "not-in-herd-toml" not in text and "hunter2" not in text
    assert 'secrets = ["DB_PASSWORD", "DJANGO_SECRET_KEY"]' in text


def test_a_build_context_bakes_to_the_files_docker_would_copy(tmp_path: Path) -> None:
    """The recipe from a Dockerfile bakes (scratch: no download), and the image holds each COPY's
    files where Docker's COPY puts them, with the Dockerfile's WORKDIR and CMD."""
    project = tmp_path / "shop"
    (project / "web" / "static").mkdir(parents=True)
    (project / "compose.yaml").write_text("services:\n  web:\n    build: ./web\n    ports: ['18080:8000']\n")
    (project / "web" / "Dockerfile").write_text(
        "FROM scratch\nWORKDIR /srv\nCOPY app.py .\nCOPY static/ ./static/\nCOPY app.py /opt/main.py\n"
        'CMD ["python3", "app.py"]\n'
    )
    (project / "web" / "app.py").write_text("print('hi')\n")
    (project / "web" / "static" / "site.css").write_text("body {}\n")
    assert herd(project, "import", "compose.yaml").returncode == 0
    baked = herd(project, "bake")
    assert baked.returncode == 0, baked.stderr
    exported = herd(project, "image", "export", "web", "-o", "web.tar", "--format", "oci")
    assert exported.returncode == 0, exported.stderr
    names, config = _image_files(project / "web.tar")
    assert {"srv/app.py", "srv/static/site.css", "opt/main.py"} <= names
    assert config["config"]["WorkingDir"] == "/srv" and config["config"]["Cmd"] == ["python3", "app.py"]


def _image_files(archive: Path) -> tuple[set[str], dict[str, object]]:
    """The file names in every layer of an OCI archive's one image, and the image config."""
    with tarfile.open(archive) as outer:

        def blob(digest: str) -> bytes:
            member = outer.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            assert member is not None
            return member.read()

        index = json.loads(outer.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        names: set[str] = set()
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=io.BytesIO(blob(layer["digest"]))) as inner:
                names |= {member.name.lstrip("./") for member in inner.getmembers() if member.isfile()}
        return names, json.loads(blob(manifest["config"]["digest"]))
