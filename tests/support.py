"""Test support: waiting on a condition with a deadline (never a bare sleep), expected error
codes, free ports."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    cond: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """Poll `cond` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def async_wait_until(
    cond: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Async `wait_until`: `cond` may be a plain function or a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def expect_error(code: int, pending: Awaitable[object]) -> None:
    """`pending` fails with RpcError `code` (an ErrorCode of common.proto)."""
    from fabric.methods import RpcError
    from schema import common_pb2 as pb

    try:
        await pending
    except RpcError as err:
        assert err.code == code, f"wanted {pb.ErrorCode.Name(code)}, got {err}"
        return
    raise AssertionError(f"wanted {pb.ErrorCode.Name(code)}, but the call succeeded")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
