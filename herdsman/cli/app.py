"""The `herd` group and what every command shares: the --file and --verbose options, the project.

Every command takes `--file` to point at a herd.toml (default: the nearest one upwards). Errors are
HerdErrors printed as one line plus a hint; `--verbose` adds the traceback.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import click

from herdsman import __version__

if TYPE_CHECKING:
    from herdsman.spec import Project

HELP = """herdsman: immutable infrastructure for a stack described in one herd.toml.

\b
  herd init      write a commented starter herd.toml
  herd import compose.yaml   write a commented herd.toml from a docker compose file
  herd check     validate herd.toml (and herd.lock); --for kubernetes: what has no equivalent there
  herd bake      bake reproducible OCI images into .herd/images, pinning inputs in herd.lock
  herd images    list baked images
  herd image export IMAGE -o FILE   write an image as a `docker load` / OCI archive
  herd export kubernetes [ENV] -o DIR   the current release as Kubernetes manifests
  herd push IMAGE REGISTRY/NAME[:TAG]   send an image to an OCI registry
  herd pull REGISTRY/NAME@sha256:...    fetch an image by digest, every blob verified
  herd deploy    bake, record a release and replace the running instances with it
  herd rollback  roll out an earlier release again (as a new release)
  herd releases  the release history
  herd diff A B  what changed between two releases: config values, image layers
  herd ps        the running instances
  herd down      stop every instance (volumes and logs stay)
  herd up        deploy and keep the stack running with the agent (-d: in the background)
  herd logs      the logs of every instance, merged by time
  herd events    what happened: deploys, heals, quarantines, scaling (-f follows)
  herd scale     run N instances of a service (runtime state, not a release)
  herd quarantine   instances pulled from service and kept for inspection (purge deletes)
  herd inspect   what a quarantined instance ran, why it was pulled, what it changed
  herd volume    volumes: ls, snapshots, backup NAME FILE, restore NAME FILE
  herd prune     delete old images, logs and snapshots ([retention]); --dry-run says why each stays
  herd verify    check running instances against their image and release (drift)
  herd canary    a canary's live numbers and verdict (status), or overrule it (promote, abort)
  herd preview   short-lived environments from production's bytes: create, ls, rm, logs
  herd node      a Swarm environment's nodes: ls, drain NODE (no failed request), activate NODE
  herd api schema   the OpenAPI schema of the agent's API (token in .herd/agent-ENV.token)
"""


_options = {"verbose": False}  # read by main() to decide whether errors show a traceback


class Context:
    def __init__(self, file: Path | None, verbose: bool, driver: str | None = None) -> None:
        self.file = file
        self.verbose = verbose
        self.driver = driver  # `herd --driver NAME`: wins over the environment's `driver`

    def project(self) -> Project:
        from herdsman.spec import load_project  # the models load only for commands that need them

        return load_project(self.file)


pass_context = click.make_pass_decorator(Context)


def _known_driver(name: str | None) -> str | None:
    """`--driver` names a registered driver (read lazily: the registry is not loaded at start-up)."""
    if name is None:
        return None
    from herdsman.spec.models import known_drivers

    if name not in known_drivers():
        raise click.BadParameter(
            f"no driver {name!r}; known: {', '.join(known_drivers())}", param_hint="--driver"
        )
    return name


# Commands are imported when used, not at start-up: `herd bake` must not pay for the deploy code.
COMMANDS = {
    "init": "herdsman.cli.images:init",
    "import": "herdsman.cli.importers:import_command",
    "check": "herdsman.cli.images:check",
    "bake": "herdsman.cli.bake:bake_command",
    "images": "herdsman.cli.images:images",
    "image": "herdsman.cli.images:image",
    "export": "herdsman.cli.export:export_group",
    "deploy": "herdsman.cli.deploy:deploy_command",
    "rollback": "herdsman.cli.deploy:rollback",
    "releases": "herdsman.cli.deploy:releases",
    "diff": "herdsman.cli.deploy:diff_command",
    "ps": "herdsman.cli.ps:ps",
    "down": "herdsman.cli.deploy:down",
    "logs": "herdsman.cli.deploy:logs",
    "up": "herdsman.cli.deploy:up",
    "events": "herdsman.cli.agent:events",
    "scale": "herdsman.cli.agent:scale",
    "quarantine": "herdsman.cli.agent:quarantine",
    "inspect": "herdsman.cli.agent:inspect",
    "api": "herdsman.cli.agent:api",
    "verify": "herdsman.cli.agent:verify",
    "canary": "herdsman.cli.canary:canary",
    "preview": "herdsman.cli.preview:preview",
    "node": "herdsman.cli.nodes:node",
    "volume": "herdsman.cli.volume:volume",
    "prune": "herdsman.cli.volume:prune",
    "push": "herdsman.cli.registry:push",
    "pull": "herdsman.cli.registry:pull",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(
    cls=LazyGroup,
    help=HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "-f", "--file", type=click.Path(path_type=Path), help="The herd.toml to use (default: the nearest one)."
)
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.option(
    "--driver",
    envvar="HERD_DRIVER",
    callback=lambda ctx, param, value: _known_driver(value),
    help="Run instances with this driver (process, docker, or an installed plug-in), whatever "
    "[environment.NAME] driver says.",
)
@click.version_option(__version__, prog_name="herd")
@click.pass_context
def cli(ctx: click.Context, file: Path | None, verbose: bool, driver: str | None) -> None:
    ctx.obj = Context(file, verbose, driver)
    _options["verbose"] = verbose
