"""The control socket's framing, shared by the router (control.py) and its clients (client.py)
without either importing the other: one JSON document per line.

A line may be long: a pool of a thousand backends is about 70 KB, and their stats (latency
histograms included) several hundred KB, far over asyncio's 64 KiB default line limit, past
which a read fails and the pool change with it.
"""

LINE_LIMIT = 64 * 1024 * 1024
