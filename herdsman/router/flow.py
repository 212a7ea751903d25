"""Why a client socket is not being read: one bit per reason, so that each cause of back-pressure
(pipelined requests piling up, a slow upstream, a streamed body with nowhere to go yet, a client
that does not read its answers, an upgrade the router does not speak) is lifted on its own and
reading resumes only when none is left."""

HOLD_BUFFER = 1  # too many pipelined requests wait
HOLD_UPSTREAM = 2  # the upstream connection cannot take more of a streamed request body
HOLD_PENDING = 4  # a streamed request body waits for its upstream connection
HOLD_WRITING = 8  # the client does not read its answers
HOLD_UPGRADE = 16  # what follows is another protocol
