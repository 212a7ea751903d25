"""Drivers start and stop instances. One small protocol (`base.Driver`), one file per driver."""
