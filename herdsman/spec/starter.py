"""The commented starter herd.toml that `herd init` writes: a Python web app, ready to bake.

It doubles as documentation of every section, so it is tested to parse.
"""

from __future__ import annotations

STARTER = """# herd.toml: one stack, described once. `herd check` validates it, `herd bake` bakes its images.
# Durations are written with a unit: "250ms", "1s", "2m", "1h"; at most 30 days ("720h").

[stack]
name = "{name}"                      # lower-case letters, digits and '-'
# environment = "production"         # the default environment
# verify_every = "5m"                 # how often the agent checks for drift (`herd verify`); "0s": never

# [router]
# engine = "embedded"                # the routing layer: "embedded" (nothing to install) or "haproxy"
                                     # (HAProxy >= 2.6 on PATH, run and driven by herdsman)
# workers = 1                        # embedded router processes on the listeners; "auto": one per core

[service.web]
command = ["python3", "app.py"]      # or a string, split like a shell would: "python3 app.py"
port = 8000                          # the app must listen on $PORT: herdsman sets it per instance
replicas = 2
env = {{ GREETING = "hello" }}         # plain config; it is part of the release, not of the image
# secrets = ["DATABASE_URL"]         # taken from the deployer's environment, stored by name only
volumes = {{ data = "/data" }}         # named volumes live outside instances and survive replacement
stop_grace = "10s"                   # SIGTERM, then SIGKILL after this long
min_ready = "1s"                     # without a health check: how long a new instance must keep running

[service.web.image]
base = "host"                        # "host" (run on this machine's OS), "scratch", "debian:bookworm",
                                     # "oci:PATH" (an OCI layout dir), "docker-archive:PATH" (docker save)
# packages = ["python3-minimal"]     # Debian packages, with a debian base only
# requirements = "requirements.txt"  # Python wheels, pinned in herd.lock, installed to python_path
copy = [{{ src = ".", dest = "/app" }}]  # project files; .herdignore or .dockerignore is honoured
workdir = "/app"
env = {{ PYTHONUNBUFFERED = "1" }}     # baked into the image

[service.web.health]
type = "http"                        # "http", "tcp" or "command"
path = "/healthz"
interval = "1s"
timeout = "1s"
successes = 1                        # passing checks before an instance takes traffic
failures = 3                         # failing checks before it is pulled out
deadline = "60s"                     # a new instance not healthy by then fails the deploy

[service.web.route]
listen = "127.0.0.1:8080"            # a stable address in front of the instances
# host = "web.example.com"           # share one address between services by Host header
drain_timeout = "30s"
first_byte_timeout = "30s"           # no first response byte by then: retried elsewhere (GET...) or 504

[service.web.deploy]
strategy = "rolling"                 # "rolling", "blue-green", or "canary" (judged: [service.web.canary])
max_surge = 1                        # extra instances started ahead of stopping old ones
max_unavailable = 0                  # old instances that may stop before replacements are healthy

[volume.data]
description = "what the app keeps between deploys"

[retention]                          # what `herd prune` keeps; the rest is deleted
releases = 10                        # the images of the last N releases of each environment
prune_every = "6h"                   # a running agent prunes by itself this often ("0s": never)

[preview]                            # `herd preview create NAME`: short-lived copies of production
ttl = "2h"                           # removed (instances, volumes, logs) when this runs out
max = 5                              # at most this many at once
"""


def starter(name: str) -> str:
    return STARTER.format(name=name)
