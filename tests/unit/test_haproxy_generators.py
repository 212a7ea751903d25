"""The HAProxy engine's pure parts: `[router] engine` in herd.toml, the config text for routes and
pools, the runtime commands of a pool change, a drain and a removal, and `show stat` read back."""

from __future__ import annotations

import pytest

from herdsman.errors import SpecError
from herdsman.router.haproxy.commands import (
    Server,
    drain_commands,
    pool_commands,
    remove_commands,
    wanted_servers,
)
from herdsman.router.haproxy.config import Paths, backend_name, haproxy_config
from herdsman.router.haproxy.stats import router_stats, rows, servers_by_backend
from herdsman.spec import parse_stack

STACK = """
[stack]
name = "shop"
[service.web]
command = ["python3", "app.py"]
port = 8000
[service.web.image]
base = "host"
"""

PATHS = Paths(socket="/h/run/haproxy.sock", pidfile="/h/run/haproxy.pid")


def route(name: str, listen: str, host: str | None = None, first_byte: float = 30.0) -> dict[str, object]:
    return {
        "name": name,
        "listen": listen,
        "host": host,
        "drain_timeout": 10.0,
        "first_byte_timeout": first_byte,
    }


def test_router_engine_defaults_to_embedded_and_takes_haproxy() -> None:
    assert parse_stack(STACK, file="herd.toml").router.engine == "embedded"
    assert parse_stack(STACK + '[router]\nengine = "haproxy"\n', file="herd.toml").router.engine == "haproxy"


def test_an_unknown_router_engine_is_refused_with_its_key_and_a_hint() -> None:
    with pytest.raises(SpecError) as info:
        parse_stack(STACK + '[router]\nengine = "nginx"\n', file="herd.toml")
    problem = info.value.problems[0]
    assert problem.key == "router.engine" and "no router engine 'nginx'" in problem.message
    assert "haproxy" in problem.hint and "embedded" in problem.hint
    with pytest.raises(SpecError) as info:
        parse_stack(STACK + '[router]\nengine = "haproxy"\nworkers = 2\n', file="herd.toml")
    refused = info.value.problems[0]
    assert refused.key.startswith("router") and "workers is the embedded router's" in refused.message


def test_config_has_a_frontend_per_listen_address_and_host_rules_when_shared() -> None:
    routes = [
        route("production/web", "127.0.0.1:8080", first_byte=2.5),
        route("production/api", "127.0.0.1:8080", host="api.localhost"),
        route("production/admin", "127.0.0.1:9090"),
    ]
    text = haproxy_config(routes, {}, PATHS)
    assert text.count("\nfrontend ") == 2
    assert "    bind 127.0.0.1:8080\n" in text and "    bind 127.0.0.1:9090\n" in text
    assert (
        "    use_backend r_production__api if { req.hdr(host),field(1,:),lower -m str api.localhost }" in text
    )
    assert "    default_backend r_production__web" in text
    assert "    default_backend r_production__admin" in text
    assert "stats socket /h/run/haproxy.sock mode 600 level admin expose-fd listeners" in text
    assert "    master-worker\n" in text and "    pidfile /h/run/haproxy.pid\n" in text
    web = text.split("\nbackend r_production__web\n", 1)[1].split("\n\n", 1)[0]
    assert "    balance roundrobin" in web
    assert "    timeout server 2500ms" in web and "    timeout connect 2500ms" in web
    assert "    retry-on conn-failure empty-response response-timeout" in web
    assert "    retries 3" in web and "    option redispatch 1" in web
    # a request that may have been acted upon is never sent twice (only a connection failure is retried)
    assert "http-request disable-l7-retry unless { method GET HEAD OPTIONS PUT DELETE TRACE }" in web
    assert "\n    server " not in web, "no pool yet: servers come at runtime"


def test_config_keeps_the_pools_known_so_a_reload_empties_none() -> None:
    pools = {"production/web": [{"id": "web-1-ab", "address": "127.0.0.1:9001", "weight": 300}]}
    text = haproxy_config([route("production/web", "127.0.0.1:8080")], pools, PATHS)
    assert "    server web-1-ab 127.0.0.1:9001 weight 256\n" in text  # HAProxy's ceiling
    assert haproxy_config([], {}, PATHS).count("frontend") == 0


def test_a_pool_switch_adds_and_readies_before_it_drains() -> None:
    current = {
        "old": Server("old", "127.0.0.1:9001", 1),
        "gone": Server("gone", "127.0.0.1:9003", 1, "drain"),
    }
    wanted = wanted_servers([("new", "127.0.0.1:9002", 2)])
    assert pool_commands("r_p__web", current, wanted) == [
        "add server r_p__web/new 127.0.0.1:9002 weight 2 pool-max-conn -1 pool-purge-delay 5s",
        "set server r_p__web/new state ready",
        "set server r_p__web/old state drain",  # already draining ones are left alone
    ]


def test_weight_changes_and_a_comeback_are_runtime_commands_only() -> None:
    current = {"a": Server("a", "127.0.0.1:9001", 1), "b": Server("b", "127.0.0.1:9002", 1, "drain")}
    wanted = wanted_servers([("a", "127.0.0.1:9001", 3), ("b", "127.0.0.1:9002", 1)])
    assert pool_commands("r", current, wanted) == ["set server r/a weight 3", "set server r/b state ready"]
    assert pool_commands("r", current | {"b": Server("b", "127.0.0.1:9002", 1)}, wanted[1:]) == [
        "set server r/a state drain"
    ]
    assert pool_commands("r", {"a": Server("a", "127.0.0.1:9001", 3)}, wanted[:1]) == []


def test_drain_and_removal_commands_put_the_server_in_maint_before_del() -> None:
    assert drain_commands("r", ["a"]) == ["set server r/a state drain"]
    assert remove_commands("r", ["a"]) == ["set server r/a state maint", "del server r/a"]
    assert remove_commands("r", ["a"], cut=True)[0] == "shutdown sessions server r/a"


SHOW_STAT = (
    "# pxname,svname,qcur,scur,stot,econ,status,weight,hrsp_5xx,req_tot,ttime,addr,\n"
    "f0,FRONTEND,,3,10,,OPEN,,0,10,,,\n"
    "r_p__web,web-1,0,2,7,1,UP,2,1,7,12,127.0.0.1:9001,\n"
    "r_p__web,web-0,0,1,3,0,DRAIN,1,0,3,5,127.0.0.1:9000,\n"
    "r_p__web,BACKEND,0,3,10,1,UP,2,1,10,11,,\n"
)


def test_show_stat_reads_as_the_embedded_routers_stats() -> None:
    table = rows(SHOW_STAT)
    stats = router_stats(table, [route("p/web", "127.0.0.1:8080")], {"web-1": "web-1"})
    web = stats["p/web"]
    assert isinstance(web, dict) and web["listen"] == "127.0.0.1:8080"
    (only,) = web["backends"]  # the draining server has left the pool
    assert only["instance"] == "web-1" and only["address"] == "127.0.0.1:9001"
    assert (only["inflight"], only["requests"], only["errors"], only["weight"]) == (2, 7, 2, 2)
    assert only["mean_latency_ms"] == 12.0
    servers = servers_by_backend(table)["r_p__web"]
    assert servers["web-0"].state == "drain" and servers["web-1"] == Server("web-1", "127.0.0.1:9001", 2)
    assert backend_name("p/web") == "r_p__web"
