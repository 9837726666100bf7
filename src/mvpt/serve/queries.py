"""The server's temporary files: one folder per query, only the last few kept, all removed at exit.

A query's folder holds the uploaded video (the previews need it) and the previews made from it.
Past ``max_queries`` the least recently used query is removed with its folder, unless a preview of
it is being made right now (it is *pinned*); it goes as soon as it is unpinned. :class:`Once` makes
each derived file (a preview, a transcoded track) at most once, however many requests ask for it
at the same time. Uploads still arriving count against the bound too: past ``max_queries`` of
them a new one is refused (503). :func:`new_work_root` marks the server's folder with its
process id, so the next server started in the same place removes the folders of servers that
were killed (:func:`sweep_stale_work_roots`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from mvpt.serve.errors import ApiError

T = TypeVar("T")
WORK_PREFIX = "mvpt-serve-"
OWNER_FILE = "owner.pid"


def new_work_root(parent: str | Path | None) -> Path:
    """A fresh folder for one server's temporary files, marked with the server's process id."""
    root = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=parent))
    (root / OWNER_FILE).write_text(str(os.getpid()))
    return root


def sweep_stale_work_roots(parent: str | Path | None) -> list[Path]:
    """Remove the work folders in ``parent`` (the system's temp folder for None) whose server
    process is gone; returns them. Folders of running servers, and unmarked ones, stay."""
    removed = []
    for root in Path(parent or tempfile.gettempdir()).glob(f"{WORK_PREFIX}*"):
        try:
            pid = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(root, ignore_errors=True)
            removed.append(root)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


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
        self._arriving: set[str] = set()

    def __len__(self) -> int:
        return len(self._queries)

    @property
    def arriving(self) -> int:
        """Queries made by :meth:`new` and not yet committed or discarded (uploads in flight)."""
        return len(self._arriving)

    def new(self) -> Query:
        """A fresh query folder, not yet listed (so not evictable) until :meth:`commit`; refused
        (ApiError 503) while ``max_queries`` uploads are already arriving."""
        if len(self._arriving) >= self.max_queries:
            raise ApiError(503, f"the server is busy receiving {len(self._arriving)} uploads; "
                                "try again in a moment", headers={"Retry-After": "5"})
        query_id = uuid.uuid4().hex
        self._arriving.add(query_id)
        folder = self.root / query_id
        folder.mkdir(parents=True)
        return Query(query_id, folder, previews=Once(self._preview_limiter))

    def commit(self, query: Query) -> None:
        self._arriving.discard(query.query_id)
        self._queries[query.query_id] = query
        self._trim()

    def discard(self, query: Query) -> None:
        self._arriving.discard(query.query_id)
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
