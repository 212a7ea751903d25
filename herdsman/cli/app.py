"""The `herd` group and what every command shares: the --file and --verbose options, the project.

Every command takes `--file` to point at a herd.toml (default: the nearest one upwards). Errors are
HerdErrors printed as one line plus a hint; `--verbose` adds the traceback.
"""

from __future__ import annotations

from pathlib import Path

import click

from herdsman import __version__
from herdsman.spec import Project, load_project

HELP = """herdsman: immutable infrastructure for a stack described in one herd.toml.

\b
  herd init      write a commented starter herd.toml
  herd check     validate herd.toml (and herd.lock)
  herd bake      bake reproducible OCI images into .herd/images, pinning inputs in herd.lock
  herd images    list baked images
  herd image export IMAGE -o FILE   write an image as a `docker load` / OCI archive
  herd deploy    bake, record a release and replace the running instances with it
  herd rollback  roll out an earlier release again (as a new release)
  herd releases  the release history
  herd ps        the running instances
  herd down      stop every instance (volumes and logs stay)
"""


_options = {"verbose": False}  # read by main() to decide whether errors show a traceback


class Context:
    def __init__(self, file: Path | None, verbose: bool) -> None:
        self.file = file
        self.verbose = verbose

    def project(self) -> Project:
        return load_project(self.file)


pass_context = click.make_pass_decorator(Context)


@click.group(help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "-f", "--file", type=click.Path(path_type=Path), help="The herd.toml to use (default: the nearest one)."
)
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="herd")
@click.pass_context
def cli(ctx: click.Context, file: Path | None, verbose: bool) -> None:
    ctx.obj = Context(file, verbose)
    _options["verbose"] = verbose
