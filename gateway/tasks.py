"""A task that lives as long as a block: the periodic refreshers and writers the web layer
and the composition root run beside the server (device revocations, e-SSC keys, the metrics
snapshot, key-ring reloads)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Future[None]]:
    """Run `coro` as a task while the block runs; on leaving it (normally or by an
    exception), cancel the task and wait until it has stopped."""
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
