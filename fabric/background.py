"""The one long-running task of a component: started once, cancelled and awaited at close.

Role: the start/stop pair of every component that runs a loop of its own (a gateway's route
binder, a router's presence announcer). No sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class Background:
    """Runs `run()` as one task from `start()` until `stop()`."""

    def __init__(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._run = run
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the task, unless it runs already."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended (a second call does nothing)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
