"""A compose `build:` context's Dockerfile as a herdsman image recipe, as far as one can say it.

herdsman bakes an image from a base, Debian packages, Python wheels and copied files: it never
runs build commands (a bake is a pure function of pinned inputs). So the Dockerfile's last stage
maps instruction by instruction: FROM -> `base` (debian:SUITE and scratch as herdsman's own
bases, any other image as a registry reference that `herd bake` pins by digest in herd.lock),
COPY/ADD -> `copy`, WORKDIR, USER, ENV, LABEL, ENTRYPOINT and CMD as they are,
`apt-get install` -> `packages` (on a debian base), `pip install -r FILE` -> `requirements`;
any other RUN, and the few instructions with no recipe key, are listed as gaps.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from herdsman.importers.gaps import Gap

DOCKER_HUB = "registry-1.docker.io"  # Docker Hub's registry API host (docker.io is its web name)
_DEBIAN_SUITES = {"10": "buster", "11": "bullseye", "12": "bookworm", "13": "trixie"}
_DEBIAN_NAMES = set(_DEBIAN_SUITES.values()) | {"sid", "testing", "stable"}
_ARG = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass
class Recipe:
    """What a Dockerfile says, in herd.toml's words (``image`` holds [service.X.image]'s keys)."""

    image: dict[str, object] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # comments for the image table
    gaps: list[Gap] = field(default_factory=list)


def registry_reference(image: str) -> str:
    """A compose or Dockerfile image name as herdsman's registry base: Docker Hub's implicit host
    and `library/` made explicit, `:latest` when no tag or digest is given."""
    first, sep, rest = image.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        first, rest = DOCKER_HUB, image if sep else f"library/{image}"
    elif first == "docker.io":
        first = DOCKER_HUB
    name = rest.split("@", 1)[0]
    if "@" not in rest and ":" not in name:
        rest += ":latest"
    return f"{first}/{rest}"


def base_for(image: str) -> tuple[str, str]:
    """(herdsman base, a note) for a FROM or compose `image:` value."""
    if image == "scratch":
        return "scratch", ""
    name, _, tag = image.partition(":")
    if name in ("debian", "docker.io/library/debian"):
        suite = tag.removesuffix("-slim").split(".")[0] or "bookworm"
        suite = _DEBIAN_SUITES.get(suite, suite)
        if suite in _DEBIAN_NAMES:
            return f"debian:{suite}", f"{image} -> herdsman's own reproducible Debian (mmdebstrap)"
    return registry_reference(image), f"{image}: `herd bake` pins it by digest in herd.lock"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    if pending:
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _argv(text: str) -> list[str]:
    """The exec form (a JSON list) as it is; the shell form under /bin/sh -c, as Docker runs it."""
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
            return parsed
    return ["/bin/sh", "-c", text]


def _stage(instructions: list[tuple[str, str]], target: str | None) -> list[tuple[str, str]]:
    """The instructions of the build's stage: ``target`` by its AS name, else the last one; the
    ARGs before the first FROM are kept (they may set the FROM)."""
    stages: list[list[tuple[str, str]]] = [[]]
    for instruction in instructions:
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    chosen = stages[-1]
    if target:
        for stage in stages[1:]:
            words = stage[0][1].split()
            if len(words) >= 3 and words[-2].upper() == "AS" and words[-1] == target:
                chosen = stage
    return [*stages[0], *chosen]


def _packages(command: str) -> list[str] | None:
    """The packages of an `apt-get install` (or `apt install`) in a RUN, or None if there is none."""
    for part in re.split(r"&&|;|\|\|", command):
        words = part.split()
        if len(words) >= 2 and words[0] in ("apt-get", "apt") and "install" in words[1:]:
            after = words[words.index("install") + 1 :]
            return [w for w in after if not w.startswith("-")]
    return None


def _pip_requirements(command: str) -> str | None:
    match = re.search(r"\bpip3?\s+install\b[^&;|]*?(?:-r|--requirement)[ =](\S+)", command)
    return match.group(1) if match else None


def _only_housekeeping(command: str) -> bool:
    """apt-get update, rm -rf of caches: what a recipe needs no word for."""
    for part in re.split(r"&&|;", command):
        words = part.split()
        if not words:
            continue
        if words[0] in ("apt-get", "apt") and ("update" in words or "install" in words or "clean" in words):
            continue
        if words[0] == "rm" or (words[0].startswith("pip") and "install" in words):
            continue
        return False
    return True


def recipe_from_dockerfile(
    text: str,
    *,
    context: str,
    where: str,
    args: dict[str, str],
    target: str | None,
    exists: Callable[[str], bool],
) -> Recipe:
    """The recipe for a Dockerfile read from ``context`` (a path relative to herd.toml); ``where``
    names the compose key for gaps; ``exists`` says whether a path relative to herd.toml exists."""
    recipe = Recipe()
    variables = dict(args)
    workdir = "/"
    copies: list[dict[str, object]] = []
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    packages: list[str] = []

    def expand(value: str) -> str:
        return _ARG.sub(lambda m: variables.get(m.group(1), env.get(m.group(1), m.group(0))), value)

    def gap(instruction: str, arguments: str, why: str) -> None:
        shown = arguments if len(arguments) <= 50 else arguments[:50] + "..."
        recipe.gaps.append(Gap(f"{where} (Dockerfile {instruction} {shown})", why))

    def source(path: str) -> str:
        joined = posixpath.normpath(posixpath.join(context, path)) if context else posixpath.normpath(path)
        return "." if joined in ("", ".") else joined

    for instruction, arguments in _stage(_instructions(text), target):
        if instruction == "ARG":
            name, _, default = arguments.partition("=")
            variables.setdefault(name.strip(), default.strip().strip('"'))
        elif instruction == "FROM":
            image = expand(arguments.split()[0]) if arguments else "scratch"
            base, note = base_for(image)
            recipe.image["base"] = base
            if note:
                recipe.notes.append(f"FROM {note}")
        elif instruction == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, expand(arguments)))
            recipe.image["workdir"] = workdir
        elif instruction in ("COPY", "ADD"):
            words = shlex.split(arguments) if not arguments.startswith("[") else json.loads(arguments)
            flags = [w for w in words if w.startswith("--")]
            paths = [expand(w) for w in words if not w.startswith("--")]
            if any(f.startswith("--from") for f in flags) or len(paths) < 2:
                gap(instruction, arguments, "files from another build stage or image cannot be copied")
                continue
            if any(f.startswith("--chown") or f.startswith("--chmod") for f in flags):
                gap(instruction, arguments, "herdsman writes every file owned by root, mode normalised")
            *sources, dest = paths
            if any("://" in s for s in sources):
                gap(instruction, arguments, "a bake reads the project's files only, never a URL")
                continue
            into = posixpath.normpath(posixpath.join(workdir, dest))
            if (len(sources) > 1 or dest.endswith("/") or dest in (".", "./")) and into != "/":
                into += "/"  # "into this directory", as Docker's COPY
            copies.extend({"src": source(src), "dest": into} for src in sources)
        elif instruction == "ENV":
            pairs = shlex.split(arguments)
            if len(pairs) >= 1 and "=" not in pairs[0]:  # the old `ENV NAME value` form
                name, _, rest = arguments.partition(" ")
                env[name] = expand(rest.strip())
            else:
                for pair in pairs:
                    name, _, val = pair.partition("=")
                    env[name] = expand(val)
        elif instruction == "LABEL":
            for pair in shlex.split(arguments):
                name, _, val = pair.partition("=")
                labels[name] = val
        elif instruction == "USER":
            recipe.image["user"] = expand(arguments)
        elif instruction == "ENTRYPOINT":
            recipe.image["entrypoint"] = _argv(arguments)
        elif instruction == "CMD":
            recipe.command = _argv(arguments)
        elif instruction == "RUN":
            found = _packages(arguments)
            requirements = _pip_requirements(arguments)
            if found:
                packages += found
            if requirements:
                candidate = source(posixpath.basename(requirements))
                if exists(candidate):
                    recipe.image["requirements"] = candidate
                else:
                    gap(instruction, arguments, f"{candidate} is not in the build context")
            if not _only_housekeeping(arguments):
                gap(
                    instruction,
                    arguments,
                    "herdsman never runs build commands: a bake is files, packages and wheels",
                )
        elif instruction in ("EXPOSE", "MAINTAINER"):
            continue  # documentation only: the port comes from compose's `ports`
        else:
            gap(instruction, arguments, _NO_KEY.get(instruction, "no image recipe key says this"))
    base = str(recipe.image.get("base", "scratch"))
    if packages:
        if base.startswith("debian:"):
            recipe.image["packages"] = sorted(set(packages))
        else:
            recipe.gaps.append(
                Gap(
                    f"{where} (apt-get install {' '.join(packages)})",
                    f"packages can be installed on a debian base only, not on {base}: "
                    "they are in the base image"
                    ' already, or use base = "debian:bookworm" with packages',
                )
            )
    recipe.image["copy"] = copies
    recipe.image["workdir"] = workdir  # Docker's default is "/", herdsman's "/app": say it
    if env:
        recipe.image["env"] = env
    if labels:
        recipe.image["labels"] = labels
    return recipe


_NO_KEY = {
    "HEALTHCHECK": "not read from the Dockerfile: write the check as compose `healthcheck` or [health]",
    "VOLUME": "a volume is declared in herd.toml ([volume.NAME] and the service's volumes)",
    "STOPSIGNAL": "herdsman stops an instance with SIGTERM, then SIGKILL after stop_grace",
    "SHELL": "no build commands run, so no shell is chosen",
    "ONBUILD": "no build commands run",
}
