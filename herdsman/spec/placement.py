"""`[service.NAME.placement]`: on which nodes a service's instances may run, and how they spread.

Every herdsman instance on Swarm is its own one-replica Swarm service, so Swarm's own spread (per
service) cannot balance a herdsman service across nodes: herdsman chooses the node of each new
instance (`drivers/placement.py`, pure) and pins it there. What a user writes is Swarm's own
vocabulary, so a constraint means the same to herdsman and to `docker service create`:

    constraints = ["node.labels.zone == a", "node.role != manager"]
    spread = "node.labels.zone"   # or "node" (the default): fewest instances of the service first
    max_per_node = 2

A constraint is parsed here, at the edge, so a typo is refused by `herd check` with its key path,
not by Swarm at deploy time. `Constraint.holds` is the one place its meaning lives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from herdsman.spec.checks import Invalid, one_line

_CONSTRAINT = re.compile(r"^\s*(node\.(?:id|hostname|role|labels\.[A-Za-z0-9_.\-]+))\s*(==|!=)\s*(\S+)\s*$")
_SPREAD = re.compile(r"^node(\.labels\.[A-Za-z0-9_.\-]+)?$")
CONSTRAINT_HINT = (
    'write ATTRIBUTE == VALUE or ATTRIBUTE != VALUE, e.g. "node.labels.zone == a" (attributes: '
    "node.id, node.hostname, node.role, node.labels.NAME)"
)


@dataclass(frozen=True)
class Constraint:
    key: str  # node.id | node.hostname | node.role | node.labels.NAME
    equal: bool
    value: str

    @classmethod
    def parse(cls, text: str) -> Constraint:
        found = _CONSTRAINT.match(text)
        if not found:
            raise Invalid(f"cannot read the constraint {text!r}", CONSTRAINT_HINT)
        return cls(found[1], found[2] == "==", found[3])

    def holds(self, attributes: Mapping[str, str]) -> bool:
        """Whether a node with these attributes (`node.id`, `node.labels.zone`...) satisfies it; a
        missing label equals nothing (Swarm's rule: `!=` holds, `==` does not)."""
        return (attributes.get(self.key) == self.value) == self.equal

    def __str__(self) -> str:
        return f"{self.key} {'==' if self.equal else '!='} {self.value}"


def _constraint(text: str) -> str:
    one_line(text)
    return str(Constraint.parse(text))  # normalised: "node.labels.zone == a"


def _spread(text: str) -> str:
    if not _SPREAD.match(text):
        raise Invalid(
            f"cannot spread by {text!r}",
            'spread = "node" (one node after another) or "node.labels.NAME" (over the values of a label)',
        )
    return text


class Placement(BaseModel):
    """Where the service's instances may run (constraints), how they spread, how many per node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    constraints: tuple[Annotated[str, AfterValidator(_constraint)], ...] = ()
    spread: Annotated[str, AfterValidator(_spread)] = "node"
    max_per_node: Annotated[int, Field(ge=1, le=10000)] | None = None

    def parsed(self) -> tuple[Constraint, ...]:
        return tuple(Constraint.parse(c) for c in self.constraints)

    @property
    def spread_label(self) -> str | None:
        """The node label instances spread over (None: spread over nodes)."""
        return self.spread.removeprefix("node.labels.") if self.spread != "node" else None

    def moves(self) -> bool:
        """Whether anything here could place an instance on another node than the default."""
        return bool(self.constraints) or self.spread != "node" or self.max_per_node is not None
