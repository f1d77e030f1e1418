"""Ray calls as awaitables: one asyncio loop (the driver's, an evaluation's) keeps many actors busy."""

from __future__ import annotations

import asyncio

import ray


async def result_of(ref: ray.ObjectRef):
    """The result of an actor call, awaited on the running loop (any loop, not only Ray's own)."""
    return await asyncio.wrap_future(ref.future())
