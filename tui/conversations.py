"""The client's view of its conversations: every message once, in seq order, no gaps.

Role: turn best-effort pushes into a complete, ordered stream. It remembers the last seq seen
per conversation; a pushed message at the next seq is passed on, one already seen is dropped,
and one beyond a gap triggers a `History` fetch of what is missing first. A sync (at login,
after a reconnect, on a `SyncHint`) fetches everything above the last seen seq of every
conversation. No sockets: it fetches through the `history` callable it is given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from schema import client_pb2

PAGE = 100

History = Callable[[int, int, int], Awaitable[client_pb2.HistoryReply]]


class ConversationTracker:
    """Last seen seq per conversation, and the gap filling that keeps it honest.

    `start_at` decides where a conversation seen for the first time starts: "all" fetches it
    from seq 1, "unread" from the user's read cursor (what a terminal client shows anyway).
    """

    def __init__(
        self,
        history: History,
        emit: Callable[[client_pb2.ChatMessage], None],
        start_at: str = "all",
    ) -> None:
        if start_at not in ("all", "unread"):
            raise ValueError("start_at is 'all' or 'unread'")
        self.history = history
        self.emit = emit
        self.start_at = start_at
        self.last: dict[int, int] = {}
        self.touched: set[int] = set()

    async def on_message(self, msg: client_pb2.ChatMessage) -> None:
        """A pushed message: pass it on in order, after filling any gap before it."""
        known = self.last.get(msg.conv_id)
        if known is None:
            known = 0 if self.start_at == "all" else msg.seq - 1
        if msg.seq <= known:
            return
        if msg.seq > known + 1:
            known = await self._fill(msg.conv_id, known, msg.seq - 1)
        if msg.seq == known + 1:
            self._pass(msg)

    async def sync(self, conversations: Iterable[client_pb2.Conversation]) -> None:
        """Fetch everything above the last seen seq of each conversation."""
        for conv in conversations:
            known = self.last.get(conv.conv_id)
            if known is None:
                known = 0 if self.start_at == "all" else conv.read_seq
                self.last[conv.conv_id] = known
            if conv.last_seq > known:
                await self._fill(conv.conv_id, known, conv.last_seq)

    async def _fill(self, conv_id: int, after: int, upto: int) -> int:
        """Fetch and pass on (after, upto]; return the last seq passed on."""
        known = after
        while known < upto:
            page = await self.history(conv_id, known, min(PAGE, upto - known))
            fresh = [m for m in page.messages if m.seq > known]
            if not fresh:
                break  # the store has nothing more yet
            for msg in sorted(fresh, key=lambda m: m.seq):
                if msg.seq != known + 1:
                    return known  # a hole in the store's answer: stop, a later sync retries
                self._pass(msg)
                known = msg.seq
        return known

    def _pass(self, msg: client_pb2.ChatMessage) -> None:
        self.last[msg.conv_id] = msg.seq
        self.touched.add(msg.conv_id)
        self.emit(msg)
