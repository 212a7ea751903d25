"""herdsman: immutable infrastructure — bake reproducible images, record immutable releases,
deploy by replacing instances behind a router that never drops a request."""

__version__ = "0.1.0"
