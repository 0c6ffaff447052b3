"""The drain helper: one await, then take whatever else is already queued without blocking.

Role: the receive half of every so-im loop (`recv_ready(sock, max_batch)`); works on any
zmq.asyncio socket (ROUTER, DEALER, SUB). Waking once per batch instead of once per frame is what
keeps the per-message cost low at every hop.
"""

from __future__ import annotations

import zmq
import zmq.asyncio

_NOBLOCK = int(zmq.NOBLOCK)


async def recv_ready(sock: zmq.asyncio.Socket, max_batch: int) -> list[list[bytes]]:
    """Wait for one multipart message, then drain up to `max_batch` in total with NOBLOCK.

    The extra messages are read through the socket's synchronous shadow while no async recv is
    pending on it, so no asyncio reader can miss an edge: the next `await` checks EVENTS first.
    """
    first: list[bytes] = await sock.recv_multipart()
    batch = [first]
    shadow = sock._shadow_sock  # the plain zmq.Socket behind the asyncio wrapper
    try:
        while len(batch) < max_batch:
            batch.append(shadow.recv_multipart(_NOBLOCK))
    except zmq.Again:
        pass
    return batch
