"""What the faces (the CLI, a script) call: the one seam between them and the core.

A face parses, calls one of these functions and formats what comes back (plain data classes and
dicts); it never builds a `Deployment`, a driver or a state store itself (import-linter holds the
CLI to this package, `herdsman.client`, and the vocabulary in `herdsman.spec` and
`herdsman.errors`).

- `stack`: where an operation runs (`open_stack`: the agent's API or `LocalStack`), the agent's
  start and stop, `herd down`.
- `views`: what the commands show: releases, instances, events, quarantine, the API schema.
- `glance`: `herd ps` while an agent runs, answered without loading what acts.
- `data`: volumes, snapshots, backup and restore.
- `images`: bake, check, baked and pulled images, export, push and pull.

The submodules load only what they use, so `herd bake` never pays for the deploy code; this
package itself imports nothing. The most used names are also reachable here, lazily:

    from herdsman.facade import open_stack, declared_secrets
    with open_stack(project) as stack:
        stack.deploy(declared_secrets(project), on_progress=print)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herdsman.facade.stack import Stack as Stack
    from herdsman.facade.stack import Stopped as Stopped
    from herdsman.facade.stack import agent_running as agent_running
    from herdsman.facade.stack import bake_here as bake_here
    from herdsman.facade.stack import current_release_number as current_release_number
    from herdsman.facade.stack import declared_secrets as declared_secrets
    from herdsman.facade.stack import deployed_image as deployed_image
    from herdsman.facade.stack import environment_of as environment_of
    from herdsman.facade.stack import keeper_of as keeper_of
    from herdsman.facade.stack import open_stack as open_stack
    from herdsman.facade.stack import run_agent as run_agent
    from herdsman.facade.stack import stack_warnings as stack_warnings
    from herdsman.facade.stack import start_agent as start_agent
    from herdsman.facade.stack import stop_stack as stop_stack
    from herdsman.facade.stack import up_starts_from as up_starts_from

_LAZY = {
    name: "herdsman.facade.stack"
    for name in (
        "Stack",
        "Stopped",
        "agent_running",
        "bake_here",
        "declared_secrets",
        "environment_of",
        "keeper_of",
        "open_stack",
        "run_agent",
        "start_agent",
        "stop_stack",
        "deployed_image",
        "stack_warnings",
        "current_release_number",
        "up_starts_from",
    )
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
