"""The full-screen client's message search: the last search's results, further pages, and the
page of a conversation around a result to jump to.

Role: `Searches` keeps every result shown since the last `/search WORDS` (numbered from 1, as
the console lists them), asks for the next page (`/search --more`, from the last result on),
and names result N for `/jump N`. `around` loads the page of a conversation that holds a
result (a few messages before it, then a page after). No drawing.
Peer sockets: those of the `ClientSession` it is given.
"""

from __future__ import annotations

from fabric.methods import RpcError
from schema import client_pb2
from tui.command_results import Failure, Found, Result
from tui.commands import CommandError, humanise, number
from tui.session import ClientSession

BEFORE_HIT = 5
"""Messages shown above a result jumped to."""


class Searches:
    """The results of the last message search."""

    def __init__(self) -> None:
        self.query = ""
        self.hits: list[client_pb2.ChatMessage] = []
        self.more = False

    def saw(self, found: Found) -> None:
        """A page of results was shown (the first page starts a new search)."""
        if found.first == 1:
            self.query, self.hits = found.query, []
        self.hits += found.messages
        self.more = found.more

    async def next_page(self, session: ClientSession) -> Result:
        """The page after the last result shown."""
        if not self.hits:
            return Failure("no search to continue: search WORDS first")
        if not self.more:
            return Failure(f"no more results for {self.query!r}")
        try:
            page = await session.search_messages(self.query, before=self.hits[-1])
        except RpcError as err:
            return Failure(humanise(err))
        return Found(self.query, list(page.messages), page.more, first=len(self.hits) + 1)

    def hit(self, text: str) -> client_pb2.ChatMessage:
        """Result number `text` of the last search; CommandError if there is none."""
        n = number(text, "N")
        if n > len(self.hits):
            raise CommandError("jump", f"no result {n}: the last search showed {len(self.hits)}")
        return self.hits[n - 1]


def hit_seq(hit: client_pb2.ChatMessage) -> int:
    """The seq a result stands for: its own, or for an edit the message it edits."""
    return hit.ref_seq if hit.kind == client_pb2.MESSAGE_KIND_EDIT and hit.ref_seq else hit.seq


async def around(
    session: ClientSession, hit: client_pb2.ChatMessage, limit: int
) -> client_pb2.HistoryReply:
    """A page of `hit`'s conversation starting BEFORE_HIT messages above it."""
    return await session.history(
        hit.conv_id, after_seq=max(hit_seq(hit) - BEFORE_HIT - 1, 0), limit=limit
    )
