"""Dynamic batching: requests that arrive while a batch computes are answered by the next one.

Per request, the time goes to reading the whole catalogue's vectors for one matrix-vector
product (memory bound); a batch of b queries reads them once. No request waits for a batch to
fill: the first request starts a batch at once, and whatever queued while it ran forms the next.

The computation runs on the event loop, between reads. A batch is short (8 queries at 13k
artworks: about 2 ms, measured before the sampled top-k) and a worker thread measured slower:
the loop's socket calls release the GIL and then wait for the worker to hand it back, so
throughput fell (0.86-0.89x of inline, p99 up 24-44%, two paired runs; docs/serving.md).
What must not hold the loop is parsing a large body, and that happens in a worker process
(serving/bodies.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Query = TypeVar("Query")
Answer = TypeVar("Answer")


class MicroBatcher(Generic[Query, Answer]):
    def __init__(
        self,
        compute: Callable[[Sequence[Query]], list[Answer]],
        max_batch: int,
        on_batch: Callable[[int], None] = lambda size: None,
    ):
        self.compute, self.max_batch, self.on_batch = compute, max_batch, on_batch
        self.pending: list[tuple[Query, asyncio.Future]] = []
        self.draining = False

    async def submit(self, query: Query) -> Answer:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((query, future))
        if not self.draining:
            self.draining = True
            asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                await asyncio.sleep(0)  # let requests already read by the loop join the batch
                batch = self.pending[: self.max_batch]
                del self.pending[: self.max_batch]
                self.on_batch(len(batch))
                try:
                    answers = self.compute([q for q, _ in batch])
                except Exception as error:  # a fault of the service, not of a request
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), answer in zip(batch, answers, strict=True):
                    if not future.done():  # the client may have gone
                        future.set_result(answer)
        finally:
            self.draining = False
