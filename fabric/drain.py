"""Batch I/O on zmq.asyncio sockets: drain what is queued, send a batch without waiting.

Role: the receive and send halves of every so-im hot loop. `recv_ready(sock, max_batch)` waits
once, then takes whatever else is already queued with NOBLOCK; `send_batch(sock, messages)`
sends many multipart messages through the socket's synchronous shadow with plain int flags and
then re-arms the asyncio reader, so a recv pending on the same socket cannot miss an edge.
Both bypass pyzmq's per-call Python conveniences (enum flags, RCVMORE lookups, the routing-id
and group handling of `Socket.send`), which cost more than libzmq's own work at these sizes.
Works on any socket type (ROUTER, DEALER, PUB, SUB).
"""

from __future__ import annotations

from collections.abc import Iterable

import zmq
import zmq.asyncio
import zmq.backend

_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE) | _NOBLOCK
_EVENTS = int(zmq.EVENTS)
_TYPE = int(zmq.TYPE)
_ROUTER = int(zmq.ROUTER)
_send = zmq.backend.Socket.send  # the plain send under zmq.Socket.send's routing_id/group layer


async def recv_ready(sock: zmq.asyncio.Socket, max_batch: int) -> list[list[bytes]]:
    """Wait for one multipart message, then drain up to `max_batch` in total with NOBLOCK.

    The extra messages are read through the socket's synchronous shadow while no async recv is
    pending on it, so no asyncio reader can miss an edge: the next `await` checks EVENTS first.
    They are received as Frames, whose `more` flag is much cheaper to read than the RCVMORE
    option `recv_multipart` asks for after every part; a ROUTER's routing id, always followed by
    the message itself, is received as plain bytes, which is cheaper still.
    """
    first: list[bytes] = await sock.recv_multipart()
    batch = [first]
    shadow = sock._shadow_sock  # the plain zmq.Socket behind the asyncio wrapper
    recv = shadow.recv
    routed = shadow.get(_TYPE) == _ROUTER
    try:
        while len(batch) < max_batch:
            parts = [recv(_NOBLOCK)] if routed else []
            part = recv(_NOBLOCK, copy=False)
            parts.append(part.bytes)
            while part.more:  # the rest of a multipart message is already here
                part = recv(_NOBLOCK, copy=False)
                parts.append(part.bytes)
            batch.append(parts)
    except zmq.Again:
        pass
    return batch


def send_batch(sock: zmq.asyncio.Socket, messages: Iterable[list[bytes]]) -> int:
    """Send each multipart message now; return how many were dropped at the high-water mark.

    Sending may make libzmq read pending input and swallow the edge an asyncio reader waits on;
    reading EVENTS through the asyncio socket afterwards reschedules that reader.
    """
    shadow = sock._shadow_sock
    dropped = 0
    for frames in messages:
        try:
            for frame in frames[:-1]:
                _send(shadow, frame, _MORE_NOBLOCK)
            _send(shadow, frames[-1], _NOBLOCK)
        except zmq.Again:
            dropped += 1
    sock.get(_EVENTS)
    return dropped
