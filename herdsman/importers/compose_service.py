"""One compose service as herd.toml tables: [service.NAME] and its env, image, health, route,
deploy and limits tables, plus the gaps. Pure: files (env_file, Dockerfile) come through `read`."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from herdsman.errors import HerdError
from herdsman.importers import compose_values as cv
from herdsman.importers.dockerfile import base_for, recipe_from_dockerfile
from herdsman.importers.gaps import NETWORK, NO_EQUIVALENT, Gap
from herdsman.importers.interpolate import Interpolation, parse_env_file
from herdsman.importers.toml_text import Table, Value

Reader = Callable[[str], str | None]  # a path relative to herd.toml -> its text, or None

_HANDLED = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "ports", "expose",
    "healthcheck", "volumes", "deploy", "scale", "read_only", "cap_add", "cap_drop", "secrets",
    "depends_on", "working_dir", "user", "stop_grace_period", "labels", "restart", "mem_limit", "cpus",
}  # fmt: skip


@dataclass
class ServiceResult:
    tables: list[Table]
    gaps: list[Gap] = field(default_factory=list)
    volumes: dict[str, str] = field(default_factory=dict)  # herd volume name -> compose name


@dataclass
class ServiceImport:
    name: str  # herd name
    compose_name: str
    spec: dict[str, Any]
    file: str
    read: Reader
    interpolation: Interpolation
    prefix: str  # the compose file's directory, relative to herd.toml ("" beside it)
    volume_names: dict[str, str]  # compose volume name -> herd name
    gaps: list[Gap] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"services.{self.compose_name}"

    def gap(self, key: str, why: str) -> None:
        self.gaps.append(Gap(f"{self.key}.{key}" if key else self.key, why))

    def path(self, relative: str) -> str:
        joined = posixpath.normpath(posixpath.join(self.prefix, relative))
        return "." if joined in ("", ".") else joined

    def convert(self) -> ServiceResult:
        spec = self.spec
        main = Table(f"service.{self.name}", comment=f'compose service "{self.compose_name}"')
        image, command, notes = self._image()
        if "command" in spec and spec["command"] is not None:
            command = cv.argv(spec["command"], file=self.file, key=f"{self.key}.command")
        if command:
            main.set("command", list(command))
        mapping = self._port()
        if mapping is not None:
            main.set("port", mapping.container, "compose's container port: the app must listen on $PORT")
        replicas = (spec.get("deploy") or {}).get("replicas", spec.get("scale"))
        if replicas is not None:
            main.set("replicas", int(replicas))
        env, secrets = self._environment()
        if secrets:
            main.note(f"{', '.join(secrets)}: secret by name, so the value compose had is not written here")
        secrets += self._secrets()
        if secrets:
            main.set(
                "secrets", sorted(set(secrets)), "values come from the deployer's environment, never stored"
            )
        volumes = self._volumes()
        if volumes:
            main.set("volumes", dict(volumes.items()))
        if "stop_grace_period" in spec:
            grace = cv.duration(
                spec["stop_grace_period"], file=self.file, key=f"{self.key}.stop_grace_period"
            )
            main.set("stop_grace", cv.show_duration(grace))
        self._capabilities(main)
        self._remarks(main)
        base = str(image.get("base", ""))
        if (
            not command
            and not image.get("entrypoint")
            and (base in ("scratch", "host") or base.startswith("debian:"))
        ):
            self.gap("command", f"none, and a {base} base brings none: set command, or `herd check` fails")
        tables = [main]
        if env:
            tables.append(_table(f"service.{self.name}.env", env))
        image_table = Table(f"service.{self.name}.image")
        for note in notes:
            image_table.note(note)
        for name, data in image.items():
            image_table.set(name, data)
        tables.append(image_table)
        health = self._health(mapping.container if mapping else None)
        if health is not None:
            tables.append(health)
        if mapping is not None and mapping.published is not None:
            route = Table(f"service.{self.name}.route")
            route.set("listen", f"127.0.0.1:{mapping.published}", "loopback: put a public proxy in front")
            tables.append(route)
        tables += self._deploy()
        for name in spec:
            if name in NO_EQUIVALENT:
                self.gap(name, NO_EQUIVALENT[name])
            elif name not in _HANDLED and not str(name).startswith("x-"):
                self.gap(name, "herdsman has no such setting")
        return ServiceResult(tables, self.gaps, {v: k for k, v in self.volume_names.items() if v in volumes})

    def _image(self) -> tuple[dict[str, Value], list[str], list[str]]:
        """The recipe, the command it brings (a Dockerfile's CMD) and notes for the image table."""
        spec, recipe = self.spec, None
        entrypoint = spec.get("entrypoint")
        build = spec.get("build")
        image: dict[str, Value] = {}
        notes: list[str] = []
        command: list[str] = []
        if build is not None:
            build = {"context": build} if isinstance(build, str) else dict(build)
            context = str(build.get("context", "."))
            if "://" in context or context.startswith("git@"):
                raise HerdError(
                    f"the build context {context!r} is remote",
                    file=self.file,
                    key=f"{self.key}.build.context",
                    hint="clone it beside the compose file and point context at the directory",
                )
            context = self.path(context)
            text = build.get("dockerfile_inline")
            dockerfile = posixpath.normpath(
                posixpath.join(context, str(build.get("dockerfile", "Dockerfile")))
            )
            if text is None:
                text = self.read(dockerfile)
            if text is None:
                raise HerdError(
                    f"the build context has no {dockerfile}",
                    file=self.file,
                    key=f"{self.key}.build",
                    hint="run `herd import` where the compose file's build contexts are",
                )
            args = build.get("args") or {}
            if isinstance(args, list):
                args = dict(str(a).partition("=")[::2] for a in args)
            recipe = recipe_from_dockerfile(
                str(text),
                context=context,
                where=f"{self.key}.build",
                args={str(k): str(v) for k, v in args.items() if v is not None},
                target=build.get("target"),
                exists=lambda path: self.read(path) is not None,
            )
            image.update(recipe.image)
            notes = [f"from the Dockerfile {dockerfile}", *recipe.notes]
            command = recipe.command
            self.gaps += recipe.gaps
            if "image" in spec:
                notes.append(f"compose tagged it {spec['image']}: herdsman names images by digest")
        elif "image" in spec:
            base, note = base_for(str(spec["image"]))
            image["base"] = base
            image["copy"] = []
            image["workdir"] = "/"
            notes = [note, "herdsman sets the working directory: put the image's WORKDIR here"]
        else:
            raise HerdError(
                "the service has neither image nor build",
                file=self.file,
                key=self.key,
                hint="add image: or build:",
            )
        if entrypoint is not None:
            image["entrypoint"] = cv.argv(entrypoint, file=self.file, key=f"{self.key}.entrypoint")
        if spec.get("working_dir"):
            image["workdir"] = str(spec["working_dir"])
        if spec.get("user") is not None:
            image["user"] = str(spec["user"])
        labels = spec.get("labels")
        if labels:
            pairs = labels if isinstance(labels, dict) else dict(str(x).partition("=")[::2] for x in labels)
            inherited = image.get("labels")
            merged = dict(inherited) if isinstance(inherited, dict) else {}
            image["labels"] = {**merged, **{str(k): str(v) for k, v in pairs.items()}}
        return image, command, notes

    def _port(self) -> cv.PortMapping | None:
        """The first HTTP-capable TCP port: the service's port and its route; the rest are gaps."""
        ports = self.spec.get("ports") or []
        chosen: cv.PortMapping | None = None
        for index, entry in enumerate(ports):
            mapping = cv.port(entry, file=self.file, key=f"{self.key}.ports[{index}]")
            key = f"ports[{index}]"
            if mapping.protocol != "tcp":
                self.gap(key, f"{mapping.protocol}: the router forwards TCP (HTTP) only")
            elif mapping.container in cv.NOT_HTTP_PORTS:
                self.gap(
                    key,
                    f"{mapping.container} is not HTTP and the router forwards HTTP: no route; the instance "
                    f"listens on 127.0.0.1:{mapping.container} itself (host networking), so keep one replica",
                )
            elif chosen is not None:
                self.gap(key, "one route per service: only the first HTTP port is routed")
            else:
                chosen = mapping
                if mapping.published is None:
                    self.gap(key, "no host port: compose picks one at random; add a [route] to publish")
                elif mapping.host_ip not in ("", "127.0.0.1", "localhost"):
                    self.gap(key, f"routed on 127.0.0.1, not {mapping.host_ip}: herdsman listens on loopback")
        return chosen

    def _environment(self) -> tuple[dict[str, str], list[str]]:
        """env (env_file first, then environment, as compose) and the names that look secret."""
        values: dict[str, str | None] = {}
        files = self.spec.get("env_file") or []
        for index, entry in enumerate([files] if isinstance(files, str | dict) else files):
            path = entry.get("path") if isinstance(entry, dict) else entry
            required = entry.get("required", True) if isinstance(entry, dict) else True
            relative = self.path(str(path))
            text = self.read(relative)
            if text is None:
                if required:
                    raise HerdError(
                        f"the env_file {relative} does not exist",
                        file=self.file,
                        key=f"{self.key}.env_file[{index}]",
                        hint="create it, or mark it required: false",
                    )
                continue
            parsed = parse_env_file(text, file=relative)
            values.update({k: self.interpolation.text(v, f"{relative}:{k}") for k, v in parsed.items()})
        environment = self.spec.get("environment") or {}
        if isinstance(environment, list):
            environment = {
                k: (v if sep else None) for k, sep, v in (str(item).partition("=") for item in environment)
            }
        for name, raw in environment.items():
            values[str(name)] = None if raw is None else _scalar(raw)
        env: dict[str, str] = {}
        secrets: list[str] = []
        for name, val in values.items():
            if not cv.ENV_NAME.match(name):
                self.gap(f"environment.{name}", "not a variable name herdsman accepts (letters, digits, _)")
            elif val is None:
                self.gap(
                    f"environment.{name}", "takes its value from the shell running compose: set it in env"
                )
            elif val.startswith("/run/secrets/"):
                secret = cv.env_name(val.removeprefix("/run/secrets/"))
                self.gap(
                    f"environment.{name}",
                    f"points at a compose secret's file; herdsman writes no such file: "
                    f"read the variable {secret}",
                )
            elif cv.looks_secret(name, val):
                secrets.append(name)
            else:
                env[name] = val
        return env, secrets

    def _secrets(self) -> list[str]:
        names = []
        for entry in self.spec.get("secrets") or []:
            source = str(entry.get("source") if isinstance(entry, dict) else entry)
            name = cv.env_name(source)
            names.append(name)
            self.gap(
                f"secrets.{source}",
                f"compose mounts it as the file /run/secrets/{source}; "
                f"herdsman passes it as the variable {name}",
            )
        return names

    def _volumes(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for index, entry in enumerate(self.spec.get("volumes") or []):
            key = f"volumes[{index}]"
            m = cv.mount(entry, file=self.file, key=f"{self.key}.{key}")
            if m.kind == "volume":
                name = self.volume_names.setdefault(m.source, cv.herd_name(m.source))
                out[name] = m.target
                if m.read_only:
                    self.gap(key, f"{m.source} is mounted read-write: herdsman has no read-only volume mount")
            elif m.kind == "bind":
                self.gap(
                    key,
                    f"bind mount {m.source}: instances see no host directory; "
                    "bake files in (copy) or use a volume",
                )
            elif m.kind == "anonymous":
                self.gap(
                    key, f"anonymous volume at {m.target}: its data would not survive; name it to keep it"
                )
            else:
                self.gap(key, f"{m.kind} mount at {m.target}: only /tmp is a private tmpfs")
        return out

    def _health(self, port: int | None) -> Table | None:
        check = self.spec.get("healthcheck")
        key = f"{self.key}.healthcheck"
        if not check or check.get("disable") or "test" not in check:
            return None
        probe = cv.probe(check["test"], port, file=self.file, key=f"{key}.test")
        if probe is None:
            return None
        table = Table(f"service.{self.name}.health")
        if probe.type == "http":
            table.set("type", "http", "compose's test only fetched this port: herdsman probes it itself")
            table.set("path", probe.path)
        else:
            table.set("type", "command", "runs inside the instance, as compose's test did")
            table.set("command", list(probe.command))
        interval = cv.duration(check.get("interval", "30s"), file=self.file, key=f"{key}.interval")
        timeout = cv.duration(check.get("timeout", "30s"), file=self.file, key=f"{key}.timeout")
        table.set("interval", cv.show_duration(interval))
        clamped = (
            "" if timeout <= interval else "compose's was longer than the interval: at most the interval"
        )
        table.set("timeout", cv.show_duration(min(timeout, interval)), clamped)
        retries = int(check.get("retries", 3))
        table.set("failures", max(1, min(retries, 100)), "compose's retries")
        start = cv.duration(check.get("start_period", "0s"), file=self.file, key=f"{key}.start_period")
        deadline = max(60.0, start + interval * (retries + 1))
        table.set(
            "deadline", cv.show_duration(deadline), "start_period + interval x (retries + 1), at least 1m"
        )
        for extra in ("start_interval",):
            if extra in check:
                self.gap(f"healthcheck.{extra}", "herdsman checks at one interval from the start")
        return table

    def _deploy(self) -> list[Table]:
        deploy = self.spec.get("deploy") or {}
        tables: list[Table] = []
        limits = dict((deploy.get("resources") or {}).get("limits") or {})
        if "mem_limit" in self.spec:
            limits.setdefault("memory", self.spec["mem_limit"])
        if "cpus" in self.spec:
            limits.setdefault("cpus", self.spec["cpus"])
        if limits.get("memory") is not None or limits.get("cpus") is not None:
            table = Table(f"service.{self.name}.limits")
            if limits.get("memory") is not None:
                table.set(
                    "memory",
                    cv.memory(
                        limits["memory"], file=self.file, key=f"{self.key}.deploy.resources.limits.memory"
                    ),
                )
            if limits.get("cpus") is not None:
                table.set("cpus", float(limits["cpus"]))
            tables.append(table)
        if "pids" in limits:
            self.gap("deploy.resources.limits.pids", "no pids limit per instance")
        order = (deploy.get("update_config") or {}).get("order")
        if order:
            table = Table(f"service.{self.name}.deploy", comment=f"compose update_config.order: {order}")
            start_first = order == "start-first"
            table.set("max_surge", 1 if start_first else 0)
            table.set("max_unavailable", 0 if start_first else 1)
            tables.append(table)
        reasons = {
            "resources.reservations": "no reservations: [limits] caps memory and cpus",
            "restart_policy": "the agent (`herd up`) replaces every instance that stops, with growing delays",
            "placement": "one machine, or the driver's own placement (Swarm)",
            "mode": "a service runs `replicas` instances (or [scale])",
            "labels": "labels are set on the image ([image] labels)",
            "rollback_config": "a failed deploy reverts at once (auto_rollback)",
            "endpoint_mode": NETWORK,
        }
        for name, why in reasons.items():
            head, _, tail = name.partition(".")
            if head in deploy and (not tail or tail in (deploy[head] or {})):
                self.gap(f"deploy.{name}", why)
        return tables

    def _capabilities(self, main: Table) -> None:
        caps = [str(c).upper().removeprefix("CAP_") for c in self.spec.get("cap_add") or []]
        if "ALL" in caps:
            self.gap("cap_add", "ALL is not given back: name the capabilities one by one")
        caps = [c for c in caps if c != "ALL"]
        if caps:
            main.set("cap_add", caps, "the docker driver drops every other capability")
        if self.spec.get("cap_drop"):
            main.note(f"cap_drop {list(self.spec['cap_drop'])}: every capability is dropped already")

    def _remarks(self, main: Table) -> None:
        if self.spec.get("read_only") is True:
            main.note("read_only: every instance has a read-only root already")
        elif self.spec.get("read_only") is False:
            self.gap("read_only", "false: every instance has a read-only root; write to volumes or /tmp")
        restart = self.spec.get("restart")
        if restart in ("no", False):
            self.gap("restart", '"no": the agent replaces every instance that stops')
        elif restart:
            main.note(f"restart {restart}: the agent (`herd up`) replaces an instance that stops")
        depends = self.spec.get("depends_on")
        if depends:
            names = list(depends) if isinstance(depends, dict | list) else [depends]
            main.note(f"depends_on {', '.join(map(str, names))}: no start order in herd.toml (see the end)")
            self.gap(
                "depends_on",
                "no start order: each service is deployed on its own and admitted by its own health "
                "check; a service must retry (or fail its check) until what it needs answers",
            )
        if self.spec.get("expose"):
            main.note(f"expose {list(self.spec['expose'])}: every port is on loopback already")


def _scalar(raw: object) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def _table(name: str, values: dict[str, str]) -> Table:
    table = Table(name)
    for key, val in values.items():
        table.set(key, val)
    return table
