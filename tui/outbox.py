"""The client's outbox: every message is sent until the cluster acknowledges it, in order.

Role: a message goes out at once; if that attempt fails for a reason that may pass (the link
died, the gateway forgot the session, or it said "later"), the message and every one sent after
it wait in the outbox, and one flusher heals the link (`heal`: reconnect and resume, possibly on
another gateway, or back off) and resends them one at a time in the order they were sent, each
with its own client_msg_id, so the store keeps one copy of each and the receiver sees them in
order. A message leaves the outbox only when it is acknowledged or refused: for good (not your
friend, too long …), or by a gateway that answers and keeps saying "later" to it (`LATER_MAX`
times in a row: it is up, so this is its answer, and the messages behind it must not wait
forever); if the session itself is gone (logged out, the token refused), every waiting message
fails with that error. A dead link never fails a message: it waits for the reconnect. The
outbox is the one layer that retries a send: its attempts are asked once, which errors may
pass and the jittered pauses between resends come from its `fabric.retry.Policy` (`RESEND`).
Peer sockets: none of its own (`attempt` uses the session's link).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fabric.methods import RpcError
from fabric.retry import Policy
from schema import client_pb2

Attempt = Callable[[client_pb2.SendRequest], Awaitable[client_pb2.SendAck]]
Heal = Callable[[RpcError], Awaitable[bool]]
"""Make the next attempt worth trying after `RpcError`: True if the gateway is up and the error
was its answer ("later"), False if the link was healed; raise RpcError if it never will be."""

LATER_MAX = 30
"""A message the gateway answered "later" this many times in a row fails with that answer."""


@dataclass
class _Waiting:
    request: client_pb2.SendRequest
    done: asyncio.Future[client_pb2.SendAck]
    later: int = 0  # "later" answers in a row


class Outbox:
    """Sends that are not acknowledged yet, oldest first."""

    def __init__(self, attempt: Attempt, heal: Heal, policy: Policy) -> None:
        self._attempt = attempt
        self._heal = heal
        self._policy = policy
        self._waiting: dict[str, _Waiting] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def send(self, request: client_pb2.SendRequest) -> client_pb2.SendAck:
        """Send `request` until it is acknowledged (or refused for good)."""
        known = self._waiting.get(request.client_msg_id)
        if known is not None:  # the same message again: one copy, one answer
            return await asyncio.shield(known.done)
        item = _Waiting(request, asyncio.get_running_loop().create_future())
        self._waiting[request.client_msg_id] = item
        if not self._flushing():  # else it waits its turn behind the older ones
            try:
                self._settle(item, ack=await self._attempt(request))
            except asyncio.CancelledError:  # the caller stopped waiting; the message goes on
                if not self._flushing():
                    self._flush(None, None)
                raise
            except RpcError as err:
                if err.code not in self._policy.retriable:
                    self._settle(item, err=err)
                elif not self._flushing():
                    self._flush(item, err)
        return await asyncio.shield(item.done)

    def kick(self) -> None:
        """The link was re-established: resend what waits now, not after its attempt times
        out."""
        if self._waiting and not self._flushing():
            self._flush(None, None)

    def fail_all(self, err: RpcError) -> None:
        """The session is gone: every waiting message fails with `err`."""
        for item in list(self._waiting.values()):
            self._settle(item, err=err)

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()

    def _flushing(self) -> bool:
        return self._flusher is not None and not self._flusher.done()

    def _flush(self, failed: _Waiting | None, err: RpcError | None) -> None:
        self._flusher = asyncio.ensure_future(self._resend(failed, err))

    async def _resend(self, failed: _Waiting | None, err: RpcError | None) -> None:
        """Heal after `failed` met `err`, then send every waiting message in order."""
        failures = 0  # "later" answers in a row, or 1 after a heal: the pause grows with them
        while self._waiting:
            if failed is not None and err is not None:
                try:
                    answered = await self._heal(err)
                except RpcError as fatal:
                    self.fail_all(fatal)
                    return
                failed.later = failed.later + 1 if answered else 0
                if failed.later >= LATER_MAX:
                    self._settle(failed, err=err)
                failures = failures + 1 if answered else 1
                await asyncio.sleep(self._policy.pause(failures, err.code))  # resend backoff
            failed, err = None, None
            for item in list(self._waiting.values()):  # oldest first, one at a time
                if item.done.done():
                    continue
                try:
                    self._settle(item, ack=await self._attempt(item.request))
                except RpcError as refused:
                    if refused.code not in self._policy.retriable:
                        self._settle(item, err=refused)
                        continue
                    failed, err = item, refused
                    break

    def _settle(
        self, item: _Waiting, *, ack: client_pb2.SendAck | None = None, err: RpcError | None = None
    ) -> None:
        self._waiting.pop(item.request.client_msg_id, None)
        if item.done.done():
            return
        if err is not None:
            item.done.set_exception(err)
        elif ack is not None:
            item.done.set_result(ack)
