"""rich for the commands that print with it, loaded on first use, not when a module is imported.

`herd --help` imports every command module (click asks each for its short help); with rich
imported at the top of each, the help alone paid ~70 ms for a console and tables it never shows.
`console` here forwards to `cli.ui.console` once something is printed; `rich_table()` is a rich Table
in the house style (no box, no edge padding).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class _Console:
    """`cli.ui.console`, imported at the first attribute asked of it."""

    def __getattr__(self, name: str) -> Any:
        from herdsman.cli.ui import console as loaded

        return getattr(loaded, name)


console = cast("Console", _Console())


def rich_table() -> Table:
    from rich.table import Table

    return Table(box=None, pad_edge=False)
