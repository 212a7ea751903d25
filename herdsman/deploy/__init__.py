"""Deploying: a pure plan of steps, then an executor that applies them write-ahead."""
