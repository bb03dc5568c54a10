"""gateway.tasks.background: the task runs while the block does and has stopped when the
block is left, also when it is left by an exception."""

from __future__ import annotations

import asyncio

import pytest

from gateway.tasks import background


async def _ticker(ticks: list[int], stopped: list[bool]) -> None:
    try:
        while True:
            ticks.append(1)
            await asyncio.sleep(0)
    except asyncio.CancelledError:
        stopped.append(True)
        raise


async def test_runs_inside_the_block_and_is_stopped_after_it() -> None:
    ticks: list[int] = []
    stopped: list[bool] = []
    async with background(_ticker(ticks, stopped)) as task:
        for _ in range(5):
            await asyncio.sleep(0)
        assert ticks and not task.done()
    assert task.done() and task.cancelled() and stopped == [True]
    seen = len(ticks)
    await asyncio.sleep(0)
    assert len(ticks) == seen


async def test_stopped_when_the_block_raises() -> None:
    stopped: list[bool] = []
    with pytest.raises(RuntimeError, match="boom"):
        async with background(_ticker([], stopped)) as task:
            await asyncio.sleep(0)
            raise RuntimeError("boom")
    assert task.cancelled() and stopped == [True]
