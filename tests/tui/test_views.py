"""The full-screen `soim` (tmux) on a conversation of 100,000 messages, against real nodes.

Alice and Bob have 100,000 messages, stored over three days, of which Alice has read all but the
last five. Opening the conversation shows its last screen (the time it takes is printed, and
recorded in docs/benchmarks.md): a date line where the day changes, "new messages" above the
first unread one, the date in the time of messages of other days. Page Up loads older history.
/history shows in the conversation, not in the console, and the status line clears itself.
/search pages through Alice's messages and /jump opens one of them in its conversation, where
Page Down loads the newer messages. A
message from Carol, in a conversation not on screen, rings the bell and counts in the window
title — until Alice mutes Carol.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fabric.keys import load_client_plane_public
from shard_store import BatchWriter, MessageRow, Store
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until
from tests.tui.terminal import Tmux
from tui.session import ClientSession

PASSWORD = "correct-horse"
TOTAL = 100_000
READ = TOTAL - 5
DAY_MS = 86_400_000


def bells(out: Path) -> int:
    """Bells soim wrote to its terminal (a BEL that ends a title sequence is none)."""
    return re.sub(rb"\x1b\][^\x07]*\x07", b"", out.read_bytes()).count(b"\a")


def title(tmux: Tmux) -> str:
    return tmux.tmux("display-message", "-p", "-t", "alice", "#{pane_title}").strip()


def pane(screen: str) -> list[str]:
    """The message pane's rows (right of the sidebar), without trailing spaces."""
    return [line.split("│", 1)[1].rstrip() for line in screen.splitlines()[1:-2] if "│" in line]


def fill(db: str, conv: int, alice: int, bob: int) -> None:
    """TOTAL messages between Alice and Bob: up to TOTAL-10 three days ago, then seven of
    yesterday, the last three of today; the unread ones (after READ) are all Bob's."""
    now = int(time.time() * 1000)

    def ts(seq: int) -> int:
        if seq <= TOTAL - 10:
            return now - 3 * DAY_MS + seq
        return now - DAY_MS + seq if seq <= TOTAL - 3 else now - 60_000 + seq - TOTAL

    rows = [
        MessageRow(
            conv,
            seq,
            10**12 + seq,
            bob if seq % 2 or seq > READ else alice,
            f"fill-{seq}",
            ts(seq),
            f"message {seq}",
        )
        for seq in range(1, TOTAL + 1)
    ]
    with Store.open(db, 8) as store, BatchWriter(store) as writer:
        for f in writer.submit_many(rows):
            f.result(120)


@dataclass
class People:
    alice: int
    bob: int
    carol: ClientSession


async def setup(cluster: Cluster, db: str) -> People:
    """Register alice, bob and carol, make friends, fill Alice and Bob's conversation and set
    Alice's read cursor."""
    nodes = (
        cluster.start("directory")
        + cluster.start("router")
        + cluster.start("storage")
        + cluster.start("gateway")
    )
    await cluster.wait_alive(nodes)
    alice, bob, carol = [await cluster.client() for _ in range(3)]
    for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        await client.register(name, PASSWORD)
    assert alice.user and bob.user and carol.user
    for friend in (bob, carol):
        await friend.add_friend(alice.user.user_id)
        await alice.add_friend(friend.user.user_id)
    [conv] = [f.conv_id for f in (await alice.friends()).friends if f.account == "bob"]
    await asyncio.to_thread(fill, db, conv, alice.user.user_id, bob.user.user_id)
    await alice.read(conv, READ)
    return People(alice.user.user_id, bob.user.user_id, carol)


@pytest.mark.timeout(240)
def test_big_conversation_views_search_and_notifications(
    tmp_path: Path, cluster_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # muted.json goes there
    db = f"sqlite:{tmp_path}/db"

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, db) as cluster:
            people = await setup(cluster, db)
            endpoint, _ = cluster.gateways()[0]
            args = [
                "--server",
                endpoint,
                "--server-key",
                load_client_plane_public(cluster.keys_dir).decode(),
                "--device",
                "tui",
            ]
            tmux = Tmux(tmp_path)
            try:
                tmux.start("alice", args)
                await scenario(tmux, people, tmp_path / "alice.out")
            finally:
                tmux.close()

    asyncio.run(main())


async def scenario(tmux: Tmux, people: People, out: Path) -> None:
    tmux.tmux("pipe-pane", "-t", "alice", "-o", f"cat >> {out}")
    await tmux.wait("alice", r"not logged in")
    tmux.type("alice", f"/login -u alice -p {PASSWORD}")
    await tmux.wait("alice", r"^ [○●] bob +5 │")

    started = time.monotonic()
    tmux.type("alice", "/open bob")
    # the last screen: from older messages (the newest page, not only the five caught up with
    # at login) down to the newest
    await tmux.wait(
        "alice",
        r"│\S+ \S+ \S+: message 99975$(.*\n)*.*│\d\d:\d\d bob: "
        r"message 100000$",
        timeout=30,
    )
    print(
        f"\nopen a conversation of {TOTAL:,} messages: last screen in "
        f"{(time.monotonic() - started) * 1000:.0f} ms (tmux, polled every 20 ms)"
    )
    rows = pane(tmux.screen("alice"))
    new = next(i for i, row in enumerate(rows) if "── new messages ──" in row)
    assert rows[new + 1].endswith(f"message {READ + 1}")
    today = next(i for i, row in enumerate(rows) if "── today ──" in row)
    assert rows[today + 1].endswith(f"message {TOTAL - 2}")
    yesterday = next(i for i, row in enumerate(rows) if row.endswith(f"message {TOTAL - 9}"))
    assert "──" in rows[yesterday - 1]  # the day changed: a date line
    assert re.match(r"\d\d-\d\d \d\d:\d\d bob: message 99991$", rows[yesterday])

    tmux.keys("alice", "PPage")
    tmux.keys("alice", "PPage")
    await tmux.wait("alice", r"50 older messages loaded")
    tmux.keys("alice", "PPage")
    await tmux.wait("alice", r"│\d\d-\d\d \d\d:\d\d bob: message 99925$")

    # /history fills the conversation, not the console; the status line then clears
    tmux.type("alice", "/history -n 5")
    await tmux.wait("alice", r"^5 messages loaded")
    assert "bob (uid" in tmux.screen("alice")
    await tmux.wait("alice", r"^\n^>", timeout=15)  # a blank status line

    # search: pages of 20, numbered; jump to one
    tmux.type("alice", "/search 999")
    await tmux.wait("alice", r"│\[20\] \S+ \S+ \S+: message \d+$")
    tmux.type("alice", "/search --more")
    hit = await tmux.wait("alice", r"│\[25\] \S+ \S+ (\S+): message (\d+)$")
    tmux.type("alice", "/jump 25")
    await tmux.wait("alice", rf"│▶\S+ \S*\s?{hit[1]}: message {hit[2]}$")
    assert f"bob (uid {people.bob})" in tmux.screen("alice")
    # deep into the history: Page Down loads the newer pages
    tmux.type("alice", "/search 9990")
    await tmux.wait("alice", r"│\[11\] \S+ \S+ alice: message 9990$")
    tmux.type("alice", "/jump 11")
    await tmux.wait("alice", r"│▶\S+ \S+ alice: message 9990 ")
    tmux.keys("alice", "NPage")  # to the bottom of the page: the hint
    await tmux.wait("alice", r"│  ⇟ PgDn loads newer messages")
    tmux.keys("alice", "NPage")
    await tmux.wait("alice", r"^50 newer messages loaded")
    await tmux.wait("alice", r"│\S+ \S+ bob: message 10083$")

    # carol writes while bob is on screen: a bell, and the count in the title
    rung = bells(out)
    await people.carol.send("ping alice", to_user=people.alice)
    await tmux.wait("alice", r"^ [○●] carol +1 │")
    await async_wait_until(
        lambda: bells(out) == rung + 1 and title(tmux) == "so-im (1)",
        what="a bell and the unread count in the title",
    )
    tmux.type("alice", "/mute carol")
    await tmux.wait("alice", r"carol \(muted\)")
    await people.carol.send("ping again", to_user=people.alice)
    await tmux.wait("alice", r"carol \(muted\) +2 │")
    await async_wait_until(lambda: title(tmux) == "so-im", what="no count in the title")
    assert bells(out) == rung + 1  # the title was written after the message: no bell came
