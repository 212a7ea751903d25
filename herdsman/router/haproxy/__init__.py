"""HAProxy as a router engine (`[router] engine = "haproxy"`): herdsman writes its config, runs it as
its own process and changes pools through its runtime API, so the agent may die and traffic flows.

`config` (routes -> haproxy.cfg) and `commands` (pool diff -> runtime commands) are pure; `stats`
reads `show stat` into the embedded router's stats shape; `runtime` talks to the stats socket;
`engine` owns the process and implements `deploy.execute.Pools`.
"""
