"""The server's temporary files: one folder per query, only the last few kept, all removed at exit.

A query's folder holds the uploaded video (the previews need it) and the previews made from it.
Past ``max_queries`` the least recently used query is removed with its folder, unless a preview of
it is being made right now (it is *pinned*); it goes as soon as it is unpinned. :class:`Once` makes
each derived file (a preview, a transcoded track) at most once, however many requests ask for it
at the same time.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

T = TypeVar("T")


class Once:
    """Runs ``make()`` in a worker thread at most once per key; later calls get its cached result.

    A failed job is not cached (the next call tries again); a job keeps running when the request
    that started it goes away, so the next request finds it done.
    """

    def __init__(self, limiter: anyio.CapacityLimiter):
        self._limiter = limiter
        self._done: dict[Hashable, Any] = {}
        self._running: dict[Hashable, asyncio.Future] = {}

    async def get(self, key: Hashable, make: Callable[[], T]) -> T:
        if key in self._done:
            return self._done[key]
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(anyio.to_thread.run_sync(make, limiter=self._limiter))
            self._running[key] = task
            task.add_done_callback(partial(self._finished, key))
        return await asyncio.shield(task)

    def _finished(self, key: Hashable, task: asyncio.Future) -> None:
        self._running.pop(key, None)
        if not task.cancelled() and task.exception() is None:  # also marks the error as seen
            self._done[key] = task.result()


@dataclass
class Query:
    """A video a user asked about: its folder, the uploaded file, and what recommend returned."""

    query_id: str
    folder: Path
    video_path: Path | None = None
    results: list[dict] = field(default_factory=list)
    pins: int = 0
    previews: Once | None = None


class QueryStore:
    """Folders of the recent queries under ``root``; see the module docstring."""

    def __init__(self, root: Path, *, max_queries: int, preview_limiter: anyio.CapacityLimiter):
        if max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {max_queries}")
        self.root = root
        self.max_queries = max_queries
        self._preview_limiter = preview_limiter
        self._queries: OrderedDict[str, Query] = OrderedDict()

    def __len__(self) -> int:
        return len(self._queries)

    def new(self) -> Query:
        """A fresh query folder, not yet listed (so not evictable) until :meth:`commit`."""
        query_id = uuid.uuid4().hex
        folder = self.root / query_id
        folder.mkdir(parents=True)
        return Query(query_id, folder, previews=Once(self._preview_limiter))

    def commit(self, query: Query) -> None:
        self._queries[query.query_id] = query
        self._trim()

    def discard(self, query: Query) -> None:
        self._queries.pop(query.query_id, None)
        shutil.rmtree(query.folder, ignore_errors=True)

    def get(self, query_id: str) -> Query | None:
        """The query (now the most recently used), or None if unknown or already removed."""
        query = self._queries.get(query_id)
        if query is not None:
            self._queries.move_to_end(query_id)
        return query

    def pin(self, query: Query) -> None:
        query.pins += 1

    def unpin(self, query: Query) -> None:
        query.pins -= 1
        self._trim()

    def close(self) -> None:
        """Remove every query folder (at shutdown)."""
        self._queries.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def _trim(self) -> None:
        """Remove the least recently used unpinned queries past the bound; never the newest."""
        excess = len(self._queries) - self.max_queries
        older = list(self._queries.values())[:-1]
        for query in [q for q in older if q.pins == 0][:max(0, excess)]:
            self.discard(query)
