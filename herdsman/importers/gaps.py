"""One thing of the input that herd.toml cannot say, and why: listed at the end of an imported file;
and the why of each compose service key that has no equivalent at all."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gap:
    key: str  # where in the input: services.web.networks
    why: str  # what herdsman does instead, or why it has no such thing

    def render(self) -> str:
        return f"{self.key}: {self.why}"


NETWORK = "instances share the host's loopback; services reach each other by their routes (127.0.0.1:PORT)"
NO_EQUIVALENT = {
    "networks": NETWORK,
    "network_mode": NETWORK,
    "hostname": NETWORK,
    "extra_hosts": NETWORK,
    "dns": NETWORK,
    "dns_search": NETWORK,
    "links": NETWORK,
    "external_links": NETWORK,
    "mac_address": NETWORK,
    "container_name": "instances are disposable: herdsman names each one (label herd.instance)",
    "privileged": "instances run hardened (read-only, capabilities dropped); give back one with cap_add",
    "devices": "no device is passed to an instance",
    "security_opt": "instances always run with no-new-privileges and the default seccomp profile",
    "sysctls": "no kernel parameter is set per instance",
    "ulimits": "no per-instance ulimit; [limits] sets memory and cpus",
    "pid": "every instance has its own pid namespace",
    "ipc": "every instance has its own IPC namespace",
    "shm_size": "no per-instance /dev/shm size",
    "logging": "output goes to herdsman's own log store (`herd logs`)",
    "tty": "instances run detached, with no terminal",
    "stdin_open": "instances run detached, with no standard input",
    "profiles": "every service of herd.toml is deployed; set replicas = 0 in an [environment] instead",
    "platform": "images are baked for this machine",
    "pull_policy": "images are baked and stored locally by digest, never pulled by tag at start",
    "stop_signal": "herdsman stops an instance with SIGTERM, then SIGKILL after stop_grace",
    "tmpfs": "only /tmp is a private tmpfs in every instance",
    "configs": "no config files are mounted: bake them into the image (copy) or pass them in env",
    "volumes_from": "an instance mounts only its own declared volumes",
    "group_add": "the image's user runs the instance",
    "userns_mode": "no user namespace option",
    "runtime": "the driver chooses the runtime",
    "init": "the docker driver always runs Docker's init as pid 1; the process driver needs none",
}
