"""The names of every SOIM_* setting, and the start-up check for names nobody reads.

Role: `KNOWN` lists each SOIM_* environment variable some part of so-im reads (the nodes,
`soim`, `soimctl`, the Procfile, the test suite); `unknown` names those of an environment that
are not in it, each with the closest known name. A node logs them as WARNINGs at start rather
than refusing to run: one `.env` or unit template often serves several versions during a rolling
upgrade, and a setting a newer version reads must not stop an older node. tests/fabric/
test_health.py fails when the source reads a SOIM_* name missing here. No sockets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

PREFIX = "SOIM_"

KNOWN = frozenset(
    {
        # fabric.config: every process
        "SOIM_CLUSTER",
        "SOIM_NODE_ID",
        "SOIM_HOST",
        "SOIM_ADVERTISE_HOST",
        "SOIM_DISCOVERY_IFACES",
        "SOIM_DISCOVERY",
        "SOIM_SEEDS",
        "SOIM_KEYS_DIR",
        "SOIM_NODE_KEY",
        "SOIM_RPC_PORT",
        "SOIM_EVENTS_PORT",
        "SOIM_METRICS_PORT",
        "SOIM_LOG_LEVEL",
        "SOIM_LOG_FORMAT",
        "SOIM_MAX_FRAME_BYTES",
        # shard_store.settings: storage and directory nodes, soimctl's store commands
        "SOIM_DB",
        "SOIM_SHARDS",
        "SOIM_REDIS_URL",
        "SOIM_REDIS_PREFIX",
        "SOIM_BATCH_ROWS",
        "SOIM_BATCH_MS",
        "SOIM_BATCH_LINGER_MS",
        # fabric.env_file
        "SOIM_ENV_FILE",
        # gateway options
        "SOIM_GATEWAY_PORT",
        "SOIM_AUTH_DEADLINE_S",
        "SOIM_AUTH_PER_ADDR_PER_S",
        "SOIM_RESUME_PER_ADDR_PER_S",
        "SOIM_CLIENT_QUEUE_BYTES",
        "SOIM_TOKEN_AUDIT_S",
        "SOIM_REBALANCE_GRACE_S",
        "SOIM_MAX_SESSIONS_PER_USER",
        "SOIM_MAX_UNAUTH_PER_ADDR",
        "SOIM_MAX_UNAUTH_TOTAL",
        "SOIM_SESSION_RATE",
        "SOIM_SESSION_BURST",
        "SOIM_WEB_PORT",
        "SOIM_WEB_CERT",
        "SOIM_WEB_KEY",
        "SOIM_WEB_ORIGINS",
        # router options
        "SOIM_PRESENCE_GRACE_S",
        # storage options
        "SOIM_EDIT_WINDOW_S",
        # directory options
        "SOIM_KDF_PER_ADDR",
        "SOIM_REGISTER_PER_MIN",
        "SOIM_SCRYPT_N",
        "SOIM_TOKEN_TTL_S",
        "SOIM_TOKEN_REUSE_GRACE_S",
        # the Procfile (`make run`)
        "SOIM_GATEWAY1_PORT",
        "SOIM_GATEWAY2_PORT",
        "SOIM_GATEWAY1_WEB_PORT",
        "SOIM_GATEWAY2_WEB_PORT",
        # the test suite
        "SOIM_TEST_MYSQL_HOST",
        "SOIM_TEST_MYSQL_PORT",
        "SOIM_TEST_MYSQL_USER",
        "SOIM_TEST_MYSQL_PASSWORD",
        "SOIM_TEST_REDIS_URL",
        "SOIM_FUZZ_SEED",
        "SOIM_WEB_SCREENSHOTS",
    }
)


def unknown(env: Mapping[str, str] | Iterable[str]) -> list[str]:
    """One line per SOIM_* name of `env` that no part of so-im reads, sorted, e.g.
    'SOIM_SHARD: unknown setting; did you mean SOIM_SHARDS?'."""
    lines = []
    tails = {name[len(PREFIX) :]: name for name in KNOWN}
    for name in sorted(n for n in env if n.startswith(PREFIX) and n not in KNOWN):
        import difflib  # only for a misspelt name: not loaded by every process that starts

        close = difflib.get_close_matches(name[len(PREFIX) :], tails, n=1)
        hint = f"did you mean {tails[close[0]]}?" if close else "see docs/operations.md"
        lines.append(f"{name}: unknown setting; {hint}")
    return lines
