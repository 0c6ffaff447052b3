"""`soimctl bench chat --spawn` end to end on SQLite: it starts its own cluster, prints JSON with
every figure, and removes what it made. Figures are not asserted (benchmarks are commands, not
timed tests); correctness is: nothing lost, nothing duplicated."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from schema import client_pb2
from schema import common_pb2 as pb
from tests.tools.bench_run import run_bench
from tools.bench_chat import REGISTER_ROUNDS, _register
from tools.bench_clients import BenchError, ClientPool

LOGIN_KEYS = {
    "logins_per_s",
    "kdf_per_s",
    "login_ratio",
    "resumes_per_s",
    "lookups_per_s",
    "gateway_rss_mb_per_1000",
    "scrypt",
}
CHAT_KEYS = {
    "delivered_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "lost",
    "duplicated",
    "ceiling_per_s",
    "commit_p50_ms",
    "commit_p99_ms",
    "warmup_p50_ms",
    "warmup_p99_ms",
    "pattern",
    "rates",
    "unthrottled",
    "cpu_us_per_msg",
    "node_memory_mb",
    "delivered_pairs_per_s",
    "sent_pairs_per_s",
    "sent_group_per_s",
    "sent_per_ceiling",
}


def bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run `soimctl bench chat --spawn --json ARGS` on SQLite; its JSON."""
    result = run_bench(
        tmp_path, "chat", "--spawn", "--json", *args, SOIM_DB=f"sqlite:{tmp_path / 'unused'}"
    )
    assert not list(tmp_path.glob("soim-local-*")), "the throwaway cluster's folder is left"
    return result


@pytest.mark.timeout(120)
def test_logins(tmp_path: Path) -> None:
    result = bench(tmp_path, "--logins", "--clients", "2", "--sessions", "50", "--duration", "0.5")
    assert result.keys() >= LOGIN_KEYS
    assert result["scrypt"] == {**result["scrypt"], "n": 2**17, "r": 8, "p": 1}
    assert result["sessions"] == 50 and result["db"] == "sqlite"


@pytest.mark.timeout(120)
def test_chat(tmp_path: Path) -> None:
    result = bench(
        tmp_path, "--clients", "4", "--rate", "20", "--duration", "0.5", "--warmup", "0.5"
    )
    assert result.keys() >= CHAT_KEYS and result["warmup_s"] == 0.5
    assert result["warmup_p99_ms"] is not None and result["p99_ms"] is not None
    assert result["acked"] > 0 and result["store"]["rows"] >= result["acked"]
    assert result["lost"] == result["duplicated"] == 0, result
    assert result["store"]["seq_gaps"] == 0 and not result["send_errors"]
    assert result["commit_p50_ms"] is not None  # the storage node's commits were scraped
    assert result["pattern"] == "mixed" and list(result["rates"]) == ["20"]
    assert result["cpu_us_per_msg"] > 0 and result["node_memory_mb"]["nodes"] == 6


@pytest.mark.timeout(120)
def test_chat_in_groups_at_two_rates(tmp_path: Path) -> None:
    """--pattern group: every message goes to the sender's group (here 3 members, the last
    group 3 as well), each of two timed phases has figures of its own, 1:1 figures are empty."""
    result = bench(
        tmp_path,
        "--clients",
        "6",
        "--pattern",
        "group",
        "--group-size",
        "3",
        "--rates",
        "20,40",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--session-rate",
        "100",
    )
    assert result["pattern"] == "group" and result["groups"] == 2
    assert list(result["rates"]) == ["20", "40"] and result["rate"] == 20
    for phase in [*result["rates"].values(), result["unthrottled"]]:
        assert phase["group"]["pushes"] > 0 and phase["pairs"]["pushes"] == 0, phase
        assert phase["cpu_us_per_msg"] > phase["cpu_us_per_push"] > 0  # 2 pushes a message
    assert result["send_cap_per_s"] == 600 and result["delivered_pairs_per_s"] == 0
    assert result["pushes"]["expected"] == 2 * result["acked"]
    assert result["lost"] == result["duplicated"] == 0 and not result["send_errors"], result


@pytest.mark.timeout(120)
def test_chat_over_websockets(tmp_path: Path) -> None:
    """--transport ws: the clients speak the gateways' WebSocket plane (soim.proto); the same
    figures and the same audit."""
    result = bench(
        tmp_path, "--transport", "ws", "--clients", "4", "--rate", "20", "--duration", "0.5"
    )
    assert result.keys() >= CHAT_KEYS and result["transport"] == "ws"
    assert result["acked"] > 0 and result["p99_ms"] is not None
    assert result["lost"] == result["duplicated"] == 0 and not result["send_errors"], result


@pytest.mark.timeout(120)
def test_chat_over_websockets_in_json(tmp_path: Path) -> None:
    """--transport wsjson: the clients speak `soim.json` (JSON text frames, as the web client);
    1:1 and group messages all arrive once and are stored once, and the client worker's CPU is
    reported apart from the nodes'."""
    # 1 s: the unthrottled phase needs some client to reach its 10th send, a group message
    result = bench(
        tmp_path, "--transport", "wsjson", "--clients", "4", "--rate", "20", "--duration", "1"
    )
    assert result.keys() >= CHAT_KEYS and result["transport"] == "wsjson"
    assert result["acked"] > 0 and result["p99_ms"] is not None
    assert result["pushes"]["expected"] > result["acked"]  # group messages fan out
    assert result["unthrottled"]["pairs"]["pushes"] > 0
    assert result["unthrottled"]["group"]["pushes"] > 0
    assert "clients" in result["cpu_cores"]["unthrottled"]
    assert result["lost"] == result["duplicated"] == 0 and not result["send_errors"], result


class ScriptedPool:
    """A ClientPool stand-in: each connection answers its requests from a script of (request
    name, error code) in turn; an OK gives user id 100 + the connection."""

    workers = 1

    def __init__(self, scripts: list[list[tuple[str, int]]]) -> None:
        self.scripts = [list(s) for s in scripts]
        self.calls: list[str] = []

    def call(
        self, name: str, payloads: Sequence[bytes | None], window: int
    ) -> tuple[float, list[tuple[int, bytes] | None]]:
        self.calls.append(name)
        results: list[tuple[int, bytes] | None] = []
        for i, payload in enumerate(payloads):
            if payload is None:
                results.append(None)
                continue
            asked, code = self.scripts[i].pop(0)
            assert asked == name, (i, asked, name)
            reply = client_pb2.LoginReply(user_id=100 + i) if code == pb.OK else None
            results.append((code, reply.SerializeToString() if reply else b""))
        return 0.1, results


def register(pool: ScriptedPool, clients: int) -> list[int]:
    return asyncio.run(_register(cast(ClientPool, pool), "r", clients))


def test_a_register_that_timed_out_is_retried_and_logs_in_if_it_had_landed() -> None:
    pool = ScriptedPool(
        [
            [("Register", pb.OK)],
            [("Register", pb.TIMEOUT), ("Register", pb.OK)],  # the first one had not landed
            [("Register", pb.TIMEOUT), ("Register", pb.ALREADY_EXISTS), ("Login", pb.OK)],
            [
                ("Register", pb.TIMEOUT),
                ("Register", pb.ALREADY_EXISTS),
                ("Login", pb.TIMEOUT),
                ("Login", pb.OK),
            ],
        ]
    )
    assert register(pool, 4) == [100, 101, 102, 103]
    assert pool.calls == ["Register", "Register", "Login", "Login"]
    assert not any(pool.scripts)


def test_registration_fails_on_a_taken_account_and_after_its_rounds() -> None:
    taken = ScriptedPool([[("Register", pb.OK)], [("Register", pb.ALREADY_EXISTS)]])
    with pytest.raises(BenchError, match="Register ALREADY_EXISTS"):
        register(taken, 2)
    lost = ScriptedPool([[("Register", pb.TIMEOUT)] * REGISTER_ROUNDS])
    with pytest.raises(BenchError, match="Register TIMEOUT"):
        register(lost, 1)
    assert lost.calls == ["Register"] * REGISTER_ROUNDS
