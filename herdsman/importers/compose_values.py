"""The small value grammars of compose, each as herd.toml needs it: names, durations, memory
sizes, ports, volumes, health check tests. Each returns the herdsman value or raises HerdError
naming the compose key; none reads a file."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from herdsman.errors import HerdError
from herdsman.spec.durations import format_duration, parse_duration

# The router forwards HTTP: a well-known port of another protocol gets no route (databases, brokers, caches)
NOT_HTTP_PORTS = frozenset(
    {22, 25, 53, 389, 587, 636, 1433, 1521, 1883, 2181, 3306, 4222, 5432, 5671, 5672, 6379, 6380, 6650,
     7687, 8883, 9042, 9092, 11211, 26257, 27017}
)  # fmt: skip
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
}
_SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|API_KEY|ACCESS_KEY", re.I)
_HTTP_PROBE = re.compile(
    r"^\s*(?:curl|wget)(?:\s+-[-\w]+(?:=\S+)?)*\s+['\"]?https?://(?:localhost|127\.0\.0\.1)(?::(\d+))?"
    r"(/[^\s'\"]*)?['\"]?(?:\s+-[-\w]+)*\s*(?:\|\|\s*exit\s+1)?\s*$"
)


def herd_name(name: str) -> str:
    """A compose name (letters, digits, '.', '_', '-') as a herdsman name (lower-case, '-')."""
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not re.match(r"^[a-z]", out):
        out = f"x-{out}".rstrip("-")
    return out[:41].rstrip("-")


def env_name(name: str) -> str:
    """A compose secret name as an environment variable name (DB_PASSWORD)."""
    out = re.sub(r"[^A-Za-z0-9_]+", "_", name).upper()
    return out if re.match(r"^[A-Z_]", out) else f"_{out}"


def looks_secret(name: str, value: str) -> bool:
    """A password, key or token by its name, unless its value is a flag or a path to a file."""
    flag = value.lower() in ("", "0", "1", "true", "false", "yes", "no")
    return bool(_SECRET_WORDS.search(name)) and not flag and not value.startswith("/")


def duration(value: object, *, file: str, key: str) -> float:
    """A compose duration ("30s", "1m30s", "500ms") in seconds."""
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise HerdError(
            f"{value!r} is not a duration herdsman understands: {exc}",
            file=file,
            key=key,
            hint='use ms, s, m or h, such as "500ms", "10s" or "1m30s"',
        ) from None


def show_duration(seconds: float) -> str:
    return format_duration(seconds)


def memory(value: object, *, file: str, key: str) -> str:
    """A compose memory size (bytes, "512M", "1.5g", "256mb") as herdsman's "512m"."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _MEMORY_UNITS:
        raise HerdError(
            f"{value!r} is not a memory size", file=file, key=key, hint='write bytes or "512M", "1G"'
        )
    size = int(float(match.group(1)) * _MEMORY_UNITS[unit])
    for suffix, factor in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def argv(value: object, *, file: str, key: str) -> list[str]:
    """A command: a list of strings, or a string split as compose splits it (no shell)."""
    if isinstance(value, list):
        return [str(item) for item in value]
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise HerdError(
                f"cannot split {value!r}: {exc}", file=file, key=key, hint="check its quotes"
            ) from None
    raise HerdError(f"a command is a string or a list, not {value!r}", file=file, key=key)


@dataclass(frozen=True)
class PortMapping:
    container: int
    published: int | None
    host_ip: str
    protocol: str


def port(value: object, *, file: str, key: str) -> PortMapping:
    """Short syntax "[HOST_IP:][HOST:]CONTAINER[/PROTO]" or the long mapping."""
    if isinstance(value, dict):
        target, published = value.get("target"), value.get("published")
        text = f"{value.get('host_ip', '')}:{published}:{target}" if published else str(target)
        value = f"{text}/{value.get('protocol', 'tcp')}"
    text, _, protocol = str(value).partition("/")
    if text.startswith("["):  # [::1]:8080:80
        host, _, rest = text[1:].partition("]:")
        parts = [host, *rest.split(":")]
    else:
        parts = text.rsplit(":", 2)
    bad = HerdError(
        f"{value!r} is not a port mapping",
        file=file,
        key=key,
        hint='write "8080:8000" (host port, then the container port) or "8000"',
    )
    if any("-" in part for part in parts[-2:]):
        raise HerdError(
            f"{value!r}: port ranges have no equivalent", file=file, key=key, hint="publish one port"
        )
    try:
        container = int(parts[-1])
        published = int(parts[-2]) if len(parts) >= 2 and parts[-2] else None
    except ValueError:
        raise bad from None
    host_ip = parts[0].strip("[]") if len(parts) == 3 else ""
    if not 1 <= container <= 65535 or (published is not None and not 1 <= published <= 65535):
        raise bad
    return PortMapping(container, published, host_ip, protocol or "tcp")


@dataclass(frozen=True)
class Mount:
    kind: str  # volume, bind, tmpfs, anonymous
    source: str
    target: str
    read_only: bool


def mount(value: object, *, file: str, key: str) -> Mount:
    if isinstance(value, dict):
        kind = str(value.get("type", "volume"))
        target = str(value.get("target", ""))
        source = str(value.get("source") or "")
        if kind == "volume" and not source:
            kind = "anonymous"
        read_only = bool(value.get("read_only", False))
    elif isinstance(value, str):
        parts = value.split(":")
        if len(parts) == 1:
            return Mount("anonymous", "", parts[0], False)
        source, target = parts[0], parts[1]
        read_only = len(parts) > 2 and "ro" in parts[2].split(",")
        kind = "bind" if source.startswith(("/", ".", "~", "$")) else "volume"
    else:
        raise HerdError(
            f"{value!r} is not a volume", file=file, key=key, hint='write "NAME:/path" or a mapping'
        )
    if not target.startswith("/"):
        raise HerdError(
            f"{value!r}: the path inside the container must be absolute",
            file=file,
            key=key,
            hint='write "data:/var/lib/data"',
        )
    return Mount(kind, source, target.rstrip("/") or "/", read_only)


@dataclass(frozen=True)
class Probe:
    """A compose health check test as herdsman's: an HTTP probe when it is only a curl or wget of
    this instance's own port, else a command run inside the instance."""

    type: str  # http or command
    command: list[str]
    path: str = "/healthz"


def probe(test: object, port: int | None, *, file: str, key: str) -> Probe | None:
    """CMD list, CMD-SHELL list, or a string (the shell form); ["NONE"] disables (None)."""
    if isinstance(test, str):
        shell = test
        command = ["/bin/sh", "-c", test]
    elif isinstance(test, list) and test and all(isinstance(item, str) for item in test):
        head, rest = test[0], [str(item) for item in test[1:]]
        if head == "NONE":
            return None
        if head == "CMD":
            shell, command = shlex.join(rest), rest
        elif head == "CMD-SHELL":
            shell = " ".join(rest)
            command = ["/bin/sh", "-c", shell]
        else:
            raise HerdError(
                f"a health check test starts with CMD, CMD-SHELL or NONE, not {head!r}",
                file=file,
                key=key,
                hint='test: ["CMD", "pg_isready"] or ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]',
            )
        if not rest:
            raise HerdError("the health check test has no command", file=file, key=key)
    else:
        raise HerdError(f"{test!r} is not a health check test", file=file, key=key, hint="a string or a list")
    match = _HTTP_PROBE.match(shell)
    if match and port is not None and int(match.group(1) or 80) == port:
        return Probe("http", [], match.group(2) or "/")
    return Probe("command", command)
