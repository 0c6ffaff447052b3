"""soimctl: the so-im admin CLI (docopt). Parses the command line and hands it to one module.

Role: dispatch only. Each command lives in its own module under tools/ (`cmd_<name>.py` or
`bench_<what>.py`) exposing `run(args) -> int`; this file owns the usage text.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from docopt import docopt

import fabric
from fabric import env_file
from fabric.config import ConfigError
from shard_store.settings import SettingError
from tools.cmd_errors import failed

USAGE = """soimctl — look after a so-im cluster.

Usage:
  soimctl nodes [--json] [--cluster NAME] [--wait S]
  soimctl users [--json] [--cluster NAME] [--wait S]
  soimctl user add ACCOUNT --password PASSWORD [--nickname NAME] [--json] [--cluster NAME]
  soimctl user (disable|enable|unlock) USER [--json] [--cluster NAME]
  soimctl user kick USER [--message TEXT] [--json] [--cluster NAME]
  soimctl user passwd USER [--password-stdin] [--json] [--cluster NAME]
  soimctl user list [--prefix P] [--json] [--cluster NAME]
  soimctl user delete USER [--yes] [--json] [--cluster NAME]
  soimctl groups [--json] [--cluster NAME] [--wait S]
  soimctl stats [--json] [--cluster NAME] [--wait S]
  soimctl drain NODE [--grace S] [--reason TEXT] [--json] [--cluster NAME]
  soimctl history purge --before DATE [--conv ID] [--json]
  soimctl (export|import) DIR [--json]
  soimctl keys generate [--dir DIR] [--if-missing | --force] [--json]
  soimctl keys add-node NAME [--dir DIR] [--json]
  soimctl keys revoke NAME [--dir DIR] [--json]
  soimctl keys show [--dir DIR] [--json]
  soimctl shards [--json]
  soimctl prometheus-targets [--json | --out FILE] [--cluster NAME] [--wait S]
  soimctl bench fabric [--json] [--seconds S] [--inflight N]
  soimctl bench store [--json] [--backend B] [--rows N]
  soimctl bench idle [--json] [--settle S]
  soimctl bench hops [--json] [--messages N]
  soimctl bench chat [--json] [--spawn] [--logins] [--clients N] [--rate R] [--duration S]
                     [--warmup S] [--sessions N] [--pattern P] [--rates LIST]
                     [--group-size N] [--session-rate R] [--transport T]
  soimctl -h | --help
  soimctl --version

Options:
  --json           Print JSON for scripts instead of a table.
  --cluster NAME   Cluster to look at [default: $SOIM_CLUSTER or soim].
  --wait S         At most this many seconds to find the nodes needed [default: 5].
  --dir DIR        Where keys go [default: $SOIM_KEYS_DIR or var/keys].
  --if-missing     Keep existing keys; only create what is missing.
  --force          Replace existing keys (cuts off every node and client using the old ones).
  --password PASSWORD  The new account's password (8-128 characters).
  --password-stdin  Read the new password as one line of stdin (else it is asked twice).
  --prefix P       Only accounts starting with P [default: ].
  --yes            Delete without asking (needed when stdin is not a terminal).
  --message TEXT   Why the sessions end, shown to the user [default: ].
  --nickname NAME  The new account's nickname [default: ].
  --out FILE       Write the targets' JSON to FILE (atomically; never an empty list).
  --grace S        Seconds a drained node keeps running [default: 5].
  --reason TEXT    Why, for the logs [default: soimctl drain].
  --seconds S      Length of each benchmark phase in seconds [default: 3].
  --inflight N     RPC calls kept in flight [default: 64].
  --before DATE    Purge messages older than DATE: YYYY-MM-DD or an ISO timestamp (UTC).
  --conv ID        Only this conversation.
  --backend B      Store backend to measure: mysql or sqlite [default: sqlite].
  --rows N         Rows to write [default: 200000].
  --settle S       Seconds the ready cluster sits idle before its memory is read [default: 3].
  --messages N     Lone 1:1 messages to count the costs of, one at a time [default: 100].
  --spawn          Run on a throwaway local cluster (2 gateways, 2 routers, directory, storage)
                   on the environment's SOIM_DB and SOIM_REDIS_URL, removed afterwards;
                   without it, bench the running cluster of SOIM_CLUSTER.
  --logins         Measure logins, resumes, presence lookups and idle sessions instead of chat.
  --clients N      Chat clients, or accounts logging in at once with --logins [default: 100].
  --rate R         Messages per second of the latency phase [default: 2000].
  --duration S     Seconds of each chat phase (default 30), or of the lookup phase of
                   the login benchmark (default 5).
  --warmup S       Seconds at --rate before the latency phase, measured apart [default: 3].
  --sessions N     Idle sessions opened on one gateway with --logins [default: 5000].
  --pattern P      What the chat clients send: pairs (1:1 only), group (to their group only)
                   or mixed (every 10th to the group) [default: mixed].
  --rates LIST     Comma-separated rates, one latency phase each (e.g. 500,2000,5000); the
                   top-level figures are the first one's (without it: --rate).
  --group-size N   Members of each group of the chat clients [default: 20].
  --session-rate R  Sends/s each chat client may make: the gateways' SOIM_SESSION_RATE (the
                   gateways of a spawned cluster get it, burst 4 s worth) [default: 50].
  --transport T    How the chat clients connect: zmq (CurveZMQ, as soim), ws (WebSocket,
                   binary soim.proto frames) or wsjson (WebSocket, soim.json text frames, as
                   the web client); a spawned cluster's gateways get SOIM_WEB_PORT for ws and
                   wsjson [default: zmq].

Every command reads the SOIM_* settings of the nodes (see .env.example): the environment,
then the file named by SOIM_ENV_FILE or ./.env for what the environment leaves unset.
"""


_COMMANDS = {
    ("nodes",): "tools.cmd_nodes",
    ("users",): "tools.cmd_users",
    ("user", "add"): "tools.cmd_users",
    ("user", "disable"): "tools.cmd_users",
    ("user", "enable"): "tools.cmd_users",
    ("user", "unlock"): "tools.cmd_users",
    ("user", "kick"): "tools.cmd_users",
    ("user", "passwd"): "tools.cmd_users",
    ("user", "list"): "tools.cmd_accounts",
    ("user", "delete"): "tools.cmd_accounts",
    ("groups",): "tools.cmd_groups",
    ("stats",): "tools.cmd_stats",
    ("drain",): "tools.cmd_drain",
    ("history", "purge"): "tools.cmd_history",
    ("export",): "tools.cmd_export",
    ("import",): "tools.cmd_export",
    ("keys", "generate"): "tools.cmd_keys",
    ("keys", "add-node"): "tools.cmd_keys",
    ("keys", "revoke"): "tools.cmd_keys",
    ("keys", "show"): "tools.cmd_keys",
    ("shards",): "tools.cmd_shards",
    ("prometheus-targets",): "tools.cmd_prometheus",
    ("bench", "fabric"): "tools.bench_fabric",
    ("bench", "store"): "tools.bench_store",
    ("bench", "idle"): "tools.bench_idle",
    ("bench", "hops"): "tools.bench_hops",
    ("bench", "chat"): "tools.bench_chat",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `soimctl` console script."""
    args: dict[str, Any] = docopt(USAGE, argv=argv, version=f"soimctl {fabric.__version__}")
    try:
        status = _dispatch(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at exit
    except BrokenPipeError:
        # The reader went away (`soimctl shards | head -2`): what it wanted it has.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return status


def _dispatch(args: dict[str, Any]) -> int:
    """Read the settings file, then run the one command the arguments name."""
    try:
        env_file.load()
        for words, module in _COMMANDS.items():
            if all(args.get(w) for w in words):
                return int(importlib.import_module(module).run(args))
    except (ConfigError, SettingError) as err:
        detail = err.problem if args.get("--json") else str(err)
        return failed("CONFIG", detail, bool(args.get("--json")), variable=err.var)
    print("soimctl: unknown command", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
