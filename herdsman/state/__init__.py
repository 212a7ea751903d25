"""The state store: releases, rollouts with their steps, instances and events, in SQLite (WAL)."""

from herdsman.state.store import Release, Rollout, ServiceRelease, StateStore, asker, services_of

__all__ = ["Release", "Rollout", "ServiceRelease", "StateStore", "asker", "services_of"]
