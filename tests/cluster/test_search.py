"""SearchMessages through real processes, on SQLite (FTS5) and MariaDB (InnoDB FULLTEXT): every
word must start a word of the message, pages are newest first and exact, a user finds only
messages of their own conversations, and a group member whose history starts at their join
finds nothing from before it; a recalled message is found by nothing. Two storage nodes, so a
search asks more than one."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from schema import client_pb2
from schema import common_pb2 as pb
from tests.harness import running_cluster
from tests.support import async_wait_until, expect_error
from tui.plain import PlainClient
from tui.session import ClientSession

PASSWORD = "correct horse"


async def found(client: ClientSession, query: str, limit: int = 20) -> list[str]:
    """Every result of a search, page by page (newest first), checking each page's `more`."""
    out: list[str] = []
    last = None
    while True:
        page = await client.search_messages(query, before=last, limit=limit)
        assert len(page.messages) <= limit
        out += [m.body for m in page.messages]
        if not page.more:
            return out
        assert len(page.messages) == limit
        last = page.messages[-1]


@pytest.mark.timeout(120)
def test_search_pages_and_respects_who_may_read(
    tmp_path: Path, cluster_name: str, db_url: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, db_url) as cluster:
            nodes = (
                cluster.start("directory")
                + cluster.start("router")
                + cluster.start("storage", 2)
                + cluster.start("gateway")
            )
            await cluster.wait_alive(nodes)
            alice, bob, carol = [await cluster.client() for _ in range(3)]
            for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
                await client.register(name, PASSWORD)
            assert alice.user and bob.user and carol.user
            await alice.add_friend(bob.user.user_id)
            await bob.add_friend(alice.user.user_id)
            for i in range(25):
                await alice.send(f"Pineapple number {i}", to_user=bob.user.user_id)
            await bob.send("apple pie tonight?", to_user=alice.user.user_id)
            await bob.send("let us go to the beach", to_user=alice.user.user_id)

            # pages of 10, newest first, nothing lost or repeated; word prefixes match
            want = [f"Pineapple number {i}" for i in reversed(range(25))]
            assert await found(bob, "pineapple", limit=10) == want
            assert await found(alice, "PINE numb", limit=7) == want
            assert await found(alice, "apple") == ["apple pie tonight?"]
            assert await found(alice, "pie pineapple") == []
            # short words and stopwords (InnoDB indexes neither) still count
            assert await found(alice, "go the beach") == ["let us go to the beach"]
            assert await found(alice, "go") == ["let us go to the beach"]
            page = await alice.search_messages("number 7")
            assert [(m.body, m.sender_account, m.to_user) for m in page.messages] == [
                ("Pineapple number 7", "alice", bob.user.user_id)
            ]
            # soim --plain: numbered pages of 20, then search --more
            plain = PlainClient(bob, io.StringIO())
            for line in ("search pineapple", "search --more", "search --more"):
                await plain.command(line)
            lines = plain.out.getvalue().splitlines()  # type: ignore[attr-defined]
            assert lines[0].startswith("[1] ") and lines[0].endswith("alice: Pineapple number 24")
            assert lines[21].startswith("[21] ") and lines[25].endswith("Pineapple number 0")
            assert lines[-1] == "no more results for 'pineapple'" and plain.status == 1

            # carol is nobody's friend: none of it is hers to find
            assert await found(carol, "pineapple") == []

            # a group whose history starts at the join: bob finds only what came after his
            group = (await alice.group_create("fruit")).group.group_id
            await alice.send("mango before bob", to_group=group)
            await bob.group_join(group)
            await alice.send("mango after bob", to_group=group)
            assert await found(bob, "mango") == ["mango after bob"]
            assert await found(alice, "mango") == ["mango after bob", "mango before bob"]
            assert await found(carol, "mango") == []
            [hit] = (await bob.search_messages("mango")).messages
            assert (hit.to_group, hit.conv_id, hit.seq) == (group, group, 2)

            # an edit is found by its text (standing for the message it edits); a recalled
            # message, and its edits, by nothing
            zebra = await alice.send("zebra crossing", to_user=bob.user.user_id)
            await alice.send(
                "zebra stripes",
                to_user=bob.user.user_id,
                kind=client_pb2.MESSAGE_KIND_EDIT,
                ref_seq=zebra.seq,
            )
            [edit, original] = (await bob.search_messages("zebra")).messages
            assert (edit.body, edit.kind, edit.ref_seq) == (
                "zebra stripes",
                client_pb2.MESSAGE_KIND_EDIT,
                zebra.seq,
            )
            assert (original.body, original.kind) == (
                "zebra crossing",
                client_pb2.MESSAGE_KIND_TEXT,
            )
            await alice.send(
                "", to_user=bob.user.user_id, kind=client_pb2.MESSAGE_KIND_RECALL, ref_seq=zebra.seq
            )

            async def none_found() -> bool:
                return await found(bob, "zebra") == []

            await async_wait_until(none_found, what="the recalled message gone from search")

            for bad in (
                client_pb2.SearchMessagesRequest(query="  ?! "),
                client_pb2.SearchMessagesRequest(query="x" * 201),
                client_pb2.SearchMessagesRequest(query="mango", limit=51),
                client_pb2.SearchMessagesRequest(query="mango", before_msg_id=5),
            ):
                await expect_error(pb.INVALID_ARGUMENT, alice.call("SearchMessages", bad))

    asyncio.run(main())
