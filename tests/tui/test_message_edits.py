"""Edits, recalls, replies and typing in the real full-screen `soim` (tmux) on a real cluster.

Alice chats in `soim`; Bob through the session library. Bob's edit shows as the new text
marked "(edited)", his recall as "message recalled"; while he types, Alice's conversation title
says "bob is typing…" for a few seconds; Alice's typing reaches Bob. Alice's /reply shows the
quoted excerpt above her message, her /edit (no SEQ: her newest) marks it edited.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from fabric.keys import load_client_plane_public
from schema import client_pb2
from tests.cluster.test_storage import Member
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until, free_port
from tests.tui.terminal import Tmux

PASSWORD = "correct-horse"
EDIT = client_pb2.MESSAGE_KIND_EDIT
RECALL = client_pb2.MESSAGE_KIND_RECALL


@pytest.mark.timeout(90)
def test_edited_recalled_typing_and_reply_on_screen(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            port = free_port()
            await cluster.wait_alive(
                cluster.start("directory")
                + cluster.start("router")
                + cluster.start("storage")
                + cluster.start("gateway", SOIM_GATEWAY_PORT=str(port))
            )
            tmux = Tmux(tmp_path)
            try:
                await scenario(cluster, tmux, port)
            finally:
                tmux.close()

    asyncio.run(main())


async def scenario(cluster: Cluster, tmux: Tmux, port: int) -> None:
    setup = await cluster.client(0, device="setup")
    a = (await setup.register("alice", PASSWORD)).user_id
    bob_client = await cluster.client(0, device="bob-lib")
    await bob_client.register("bob", PASSWORD)
    bob = Member(bob_client)
    await setup.add_friend(bob.id)
    conv = (await bob.client.add_friend(a)).conv_id
    await setup.close()
    for text in ("hello alice", "typo heer"):
        await bob.client.send(text, to_user=a)

    key = load_client_plane_public(cluster.keys_dir).decode()
    tmux.start(
        "alice", ["--server", f"tcp://127.0.0.1:{port}", "--server-key", key, "--device", "tui"]
    )
    tmux.type("alice", f"/login -u alice -p {PASSWORD}")
    await tmux.wait("alice", r"^ so-im │ alice \(uid \d+\)")
    tmux.type("alice", "/open bob")
    await tmux.wait("alice", r"│\d\d:\d\d bob: typo heer$")

    # Bob edits and recalls: the final state, the events themselves not shown
    await bob.client.send("typo here", to_user=a, kind=EDIT, ref_seq=2)
    await tmux.wait("alice", r"│\d\d:\d\d bob: typo here \(edited\)$")
    await bob.client.send("", to_user=a, kind=RECALL, ref_seq=1)
    await tmux.wait(
        "alice",
        r"│\d\d:\d\d bob: message recalled\n.*│\d\d:\d\d bob: typo here "
        r"\(edited\)$",
    )

    # typing, both ways: shown in the title, gone a few seconds later
    await bob.client.typing(conv)
    await tmux.wait("alice", r"│ bob \(uid \d+\) · online · bob is typing…")
    await async_wait_until(
        lambda: "is typing" not in tmux.screen("alice"),
        timeout=10,
        what="the typing notice expired",
    )
    tmux.type("alice", "are you", enter=False)
    await async_wait_until(
        lambda: [
            p
            for p in bob.pushes
            if p.WhichOneof("item") == "typing" and p.typing.account == "alice"
        ],
        timeout=10,
        what="Bob told that alice types",
    )
    tmux.keys("alice", *["BSpace"] * len("are you"))

    # a reply quotes the newest message of Bob's; an edit without SEQ changes my newest
    tmux.type("alice", "/reply are you there")
    await tmux.wait(
        "alice",
        r"│ +↳ #2 bob: typo here \(edited\)\n.*│\d\d:\d\d alice: are you "
        r"there +✓",
    )
    tmux.type("alice", "/edit are you there?")
    await tmux.wait("alice", r"│\d\d:\d\d alice: are you there\? \(edited\) +✓")
    screen = tmux.screen("alice")
    assert len(re.findall(r"alice: are you there", screen)) == 1, screen  # the event not shown
    await async_wait_until(
        lambda: len([p for p in bob.pushes if p.WhichOneof("item") == "message"]) >= 2,
        timeout=10,
        what="Bob gets the reply and the edit",
    )
    seen = [p.message for p in bob.pushes if p.WhichOneof("item") == "message"]
    assert [(m.seq, m.kind, m.ref_seq, m.body) for m in seen] == [
        (5, 0, 2, "are you there"),
        (6, EDIT, 5, "are you there?"),
    ]
