"""Every timing constant of the fabric, in one place, with its unit in its name.

Role: the single source of intervals, deadlines and limits; no socket of its own.
"""

HEARTBEAT_INTERVAL_S = 1.0
"""A node publishes a heartbeat (with its load) this often."""

HEARTBEAT_MISSES_DEAD = 3
"""A peer is dead after this many missed heartbeats."""

PEER_DEAD_AFTER_S = HEARTBEAT_INTERVAL_S * HEARTBEAT_MISSES_DEAD
"""Silence after which a peer is declared dead."""

LIVENESS_CHECK_INTERVAL_S = 0.25
"""How often the membership view looks for silent peers."""

WELCOME_BEAT_S = 0.05
"""A node beats this long after a peer's SUB connects to its events PUB (its subscription has
arrived by then), so the peer need not wait up to HEARTBEAT_INTERVAL_S to count it alive."""

LINK_DEAD_CONFIRM_S = 0.25
"""A peer whose connection broke is dead once reconnecting to it is still refused this long
after the break (fabric.link_watch); a break alone may be a blip."""

RPC_DEFAULT_TIMEOUT_S = 5.0
"""Deadline of an RPC when the caller gives none."""

RPC_RETRY_BACKOFF_S = 0.05
"""First pause before an idempotent RPC is retried; doubles per attempt."""

RPC_MAX_ATTEMPTS = 3
"""Attempts for an idempotent RPC (1 for any other)."""

RPC_EXPIRY_SWEEP_S = 0.05
"""How often the RPC client fails calls whose deadline has passed."""

TAKE_MAX_BATCH = 256
"""Most messages taken from one socket in one batch pass (`fabric.batch_io`)."""

PIPELINE_BATCH = 32
"""Most messages an RPC client's or server's Reader takes in one pass. After each pass the
server has sent its replies, and the client's woken callers send their next requests before the
next pass, so the peer starts on them while this side takes the rest. One pass over all that is
queued (up to TAKE_MAX_BATCH) made the two sides take turns: with 64 calls in flight, each sat
idle while the other handled them all (bench fabric: ratio ~0.47 against ~0.55)."""

SOCKET_LINGER_MS = 200
"""Linger on close: short, so a stopping node exits fast."""

SHUTDOWN_BUDGET_S = 4.0
"""A node stops within this after SIGTERM (the design allows 5 s)."""

DISCOVERY_SETTLE_S = 0.1
"""Coalescing window for zeroconf change events."""

MAX_FRAME_BYTES = 64 * 1024
"""Largest envelope accepted from a client (default of SOIM_MAX_FRAME_BYTES)."""

CLIENT_REPLY_MAX_BYTES = 4 * 1024 * 1024
"""Largest envelope a `soim` client accepts from its (pinned) gateway: replies such as a Sync
of thousands of conversations or a long friend list outgrow what a client may send; past this
libzmq drops the link (ZMQ_MAXMSGSIZE)."""

CLUSTER_MAX_FRAME_BYTES = 4 * 1024 * 1024
"""Largest envelope accepted between nodes (authenticated peers; batches can be large)."""

HWM_MESSAGES = 100_000
"""Send/receive high-water mark on every socket."""

CLIENT_PING_INTERVAL_S = 10.0
"""A client pings its gateway this often when it has nothing else to say."""

SESSION_IDLE_EXPIRY_S = 30.0
"""A gateway drops a session that sent nothing (not even a ping) for this long."""

CLIENT_REQUEST_TIMEOUT_S = 10.0
"""The gateway's own deadline for a client request (client clocks are not trusted)."""

CLIENT_HANDSHAKE_TIMEOUT_S = 2.0
"""How long `soim` waits for a gateway to complete the Curve handshake with the pinned key
before it tries the next one."""

UPSTREAM_TIMEOUT_S = 5.0
"""Deadline of a gateway's call to a directory, router or storage node."""
NONE_ALIVE_WAIT_S = 3.0
"""How long a gateway's call waits for a node of the role it needs when none is alive (the
gateway has just started, or that node is restarting) before failing UNAVAILABLE."""
NONE_ALIVE_POLL_S = 0.05
"""How often such a call looks again."""

REBIND_SNAPSHOT_INTERVAL_S = 5.0
"""A gateway re-sends each router the full list of its sessions this often (self-healing)."""

REBIND_RETRY_S = 0.3
"""Pause before a gateway retries bindings a router refused as not its own."""

SESSION_RATE_PER_S = 50.0
"""Requests per second a session may sustain (token bucket refill rate)."""

SESSION_RATE_BURST = 200.0
"""Requests a session may send in a burst (token bucket size)."""

REBALANCE_INTERVAL_S = 1.0
"""How often a gateway checks whether it holds more than its share of the sessions."""

REBALANCE_SLACK = 1
"""Sessions a gateway may hold above its share (total / live gateways) before it moves some."""

REBALANCE_PER_ROUND = 10
"""At most this many sessions are asked to move in one round (no reconnect storm)."""

REBALANCE_SETTLE_S = 0.5
"""A round waits until every other gateway beat this long after the last one that moved
sessions: their counts then include the sessions that moved."""

REBALANCE_GRACE_S = 10.0
"""Default of SOIM_REBALANCE_GRACE_S: a gateway receives rebalanced sessions once it has been
up this long."""

REBALANCE_ASK_S = 5.0
"""A session asked to move and still here after this long may be asked again."""

REDIRECT_MARGIN_SESSIONS = 20
"""A login is redirected only to a gateway with at least this many fewer sessions ..."""

REDIRECT_RATIO = 0.75
"""... and at most this fraction of this gateway's sessions."""

DISCOVERY_RESOLVE_TIMEOUT_S = 2.0
"""How long discovery waits for a peer's SRV/TXT/A answers before giving up on that record."""

SESSION_SWEEP_INTERVAL_S = 1.0
"""How often a gateway looks for idle sessions."""

DRAIN_GRACE_S = 5.0
"""A drained node stops this long after `soimctl drain` unless the request says otherwise."""

OWN_CURSORS_DELAY_S = 0.05
"""How long a storage node lets senders' own cursor moves gather before writing them, unless a
client's cursor update goes first: one cursor transaction for many flushes instead of one each."""

GC_THRESHOLDS = (20_000, 20, 10)
"""gc.set_threshold of every node. With the default 700, requests in flight for a few
milliseconds survive into the old generations and set off full collections every ~2 s (tens of
ms each); at 20,000 they die young, and a young collection stays around a millisecond."""

GIL_SWITCH_INTERVAL_S = 0.0005
"""sys.setswitchinterval of every node: how long a thread that wants the GIL waits before the
one holding it is asked to let go (Python's default is 5 ms). A storage node's writer threads
come back from the database with a commit to hand on while the event loop runs Python: at 5 ms
that wait was part of every hop's tail (bench chat at 2,000/s, three pairs: p99 19 to 36 ms
instead of 28 to 65)."""

KDF_QUEUE_JOBS_PER_THREAD = 8
"""Password hashes (scrypt) a directory lets wait or run per KDF thread; beyond that
Login/Register answer RATE_LIMITED at once, without hashing (16 jobs on 2 cores: at most
~8 hashes ≈ 3.6 s of waiting at the default cost, well inside a client's request deadline)."""

KDF_JOBS_PER_ADDRESS = 2
"""Password hashes one client address may have waiting or running at once on a directory; a
flood from one address can then hold at most this many KDF threads (≈ one hash time of delay
for everyone else)."""

REVOCATION_AUDIT_INTERVAL_S = 5.0
"""How often a gateway asks a directory whether its sessions' tokens still hold (a backstop for
a missed SessionsEnd event: a revoked session acts at most this long after it)."""

KEYS_RELOAD_INTERVAL_S = 0.5
"""How often a node re-reads keys_dir/authorized: a revoked node key is refused within this."""

PEER_PROBE_TIMEOUT_S = 2.0
"""How long a node waits for a discovered peer's answer over the authenticated link (its
`node.Status`) before the record counts as a dead end."""

PEER_PROBE_RETRY_S = 5.0
"""A discovery record that led nowhere is probed again no sooner than this."""

MAX_PROBES_IN_FLIGHT = 16
"""Discovery records being checked at once; more wait (records are hostile input)."""

MAX_DISCOVERY_RECORDS = 1024
"""Discovery records remembered at once; past this, new ones are dropped and counted."""

FRAME_SLACK_BYTES = 1024
"""ZMQ_MAXMSGSIZE of a socket is its largest envelope plus this (routing ids, topics); libzmq
drops the connection of a peer that sends more, before buffering it."""

AUTH_SWEEP_INTERVAL_S = 0.5
"""How often a gateway closes client connections past the authentication deadline
(SOIM_AUTH_DEADLINE_S): a connection lives at most this long past it."""

CLIENT_HWM_MESSAGES = 1000
"""Send and receive high-water mark of a gateway's client socket, per connection (a received
message is at most SOIM_MAX_FRAME_BYTES)."""

CLIENT_QUEUE_CHECK_S = 0.2
"""How often a gateway measures how far its lagging clients are behind (SOIM_CLIENT_QUEUE_BYTES):
a client past the cap is disconnected within this (past twice the cap, at once)."""

KICK_FLUSH_S = 0.2
"""How long a gateway lets the Notice that says why travel before it closes a connection."""

PRE_AUTH_PER_CONN_PER_S = 1.0
PRE_AUTH_PER_CONN_BURST = 5.0
"""Register/Login/Resume one client connection may send: a token bucket (per second, burst)."""

LIMITER_MAX_KEYS = 100_000
"""Token buckets a gateway keeps per kind (connections, addresses, users); past it, the full
ones (which limit nothing) are forgotten."""

REBIND_BUDGET_S = 2.0
"""After a key revocation a node binds its events PUB again within this, or stops."""

REBIND_RETRY_S = 0.02
"""Pause between tries to bind the events PUB again (the old listener is closing)."""

MAX_KNOWN_PEERS = 256
"""Peers a heartbeat lists (and a node takes from one) for nodes that joined through a seed."""

GOSSIP_FORGET_S = 30.0
"""A peer no member has mentioned for this long is no longer tried."""

READY_ANSWER_S = 2.0
"""/readyz waits this long for the event loop's answer; a loop that gives none is not ready."""

DB_CHECK_TIMEOUT_S = 1.0
"""/readyz's database check (SELECT 1 on every database) must answer within this."""

DB_CHECK_CACHE_S = 1.0
"""... and its answer is reused for this long, so probes cost the database at most one query
per database per second."""

RESTART_BACKOFF_MIN_S = 1.0
"""`make run`: a node that exits is started again after this; each quick exit doubles it ..."""

RESTART_BACKOFF_MAX_S = 10.0
"""... up to this ..."""

RESTART_RESET_AFTER_S = 30.0
"""... and a node that ran this long before it exited is started again after the minimum."""
