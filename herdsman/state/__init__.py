"""The state store: releases, rollouts with their steps, instances and events, in SQLite (WAL)."""

from herdsman.state.store import Release, Rollout, StateStore

__all__ = ["Release", "Rollout", "StateStore"]
