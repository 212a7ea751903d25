"""The `herd` command: a thin shell over the Python API (parse options, call, format, exit code).

Every command takes `--file` to point at a herd.toml (default: the nearest one upwards). Errors are
HerdErrors printed as one line plus a hint; `--verbose` adds the traceback.
"""

from __future__ import annotations

import sys

import click

from herdsman.cli.app import _options, cli
from herdsman.errors import HerdError, SpecError

__all__ = ["cli", "main"]


def print_error(error: BaseException, *, verbose: bool) -> None:
    from herdsman.cli.ui import print_error as show  # rich loads only when there is something to show

    show(error, verbose=verbose)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        print_error(HerdError("aborted"), verbose=False)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except SpecError as exc:
        print_error(exc, verbose=_options["verbose"])
        sys.exit(2)
    except HerdError as exc:
        print_error(exc, verbose=_options["verbose"])
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: say so plainly, traceback on --verbose
        print_error(exc, verbose=_options["verbose"])
        sys.exit(70)
