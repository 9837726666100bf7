"""Run the heavy calls (recommend, preview, transcode) in worker processes with a time limit and a
memory bound, so that one hostile upload cannot take the server's CPU or memory.

Each worker is a spawned Python process that sets ``RLIMIT_AS`` (its address space) and the decode
limits of :mod:`mvpt.media`, then runs the calls it is sent, one at a time, keeping what it loaded
(the model, the index) for the next call. A call that runs past ``timeout_s`` or kills its worker
(out of memory, a crash in a decoder) ends that worker; the next call starts a fresh one. Errors
come back as :class:`WorkerError` with a kind the API maps to a status.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mvpt.errors import MediaError, MvptError, UsageError
from mvpt.media import DecodeLimits, MediaLimitError

_MP = multiprocessing.get_context("spawn")  # fork in a threaded server is unsafe


class WorkerError(Exception):
    """A call that failed in a worker: ``kind`` is 'limit', 'media', 'usage', 'pipeline', 'timeout',
    'memory' (the worker died) or 'bug'; ``message`` is one line."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


@dataclass(frozen=True)
class WorkerSettings:
    """Time limit per call (s), address-space bound per worker (bytes), decode limits."""

    timeout_s: float
    memory_bytes: int
    limits: DecodeLimits


def _error_kind(exc: BaseException) -> str:
    for kind, types in (("limit", MediaLimitError), ("memory", MemoryError), ("media", MediaError),
                        ("usage", UsageError), ("pipeline", MvptError)):
        if isinstance(exc, types):
            return kind
    return "bug"


def _worker_main(conn, settings: WorkerSettings) -> None:
    """The worker's loop: bound itself, then answer calls until the pipe closes."""
    import resource

    from mvpt.media import set_decode_limits

    resource.setrlimit(resource.RLIMIT_AS, (settings.memory_bytes, settings.memory_bytes))
    set_decode_limits(settings.limits)
    while True:
        try:
            fn, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 (every failure goes back as one line)
            answer = ("error", _error_kind(exc), _one_line(exc, settings))
        conn.send(answer)


def _one_line(exc: BaseException, settings: WorkerSettings) -> str:
    kind = _error_kind(exc)
    if kind == "memory":
        return f"it needed more than the worker's {settings.memory_bytes / 2**20:.0f} MB of memory"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if kind == "bug" else text


class _Worker:
    def __init__(self, settings: WorkerSettings):
        self.conn, child = _MP.Pipe()
        self.process = _MP.Process(target=_worker_main, args=(child, settings), daemon=True,
                                   name="mvpt-serve-worker")
        env = {"OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update({k: v for k, v in env.items() if saved[k] is None})
        try:
            self.process.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
        child.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()


class WorkerPool:
    """Worker processes, started on demand and reused; callers bound how many run at once."""

    def __init__(self, settings: WorkerSettings):
        self.settings = settings
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def call(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """``fn(*args, **kwargs)`` in a worker (blocking: call it from a thread). ``fn`` and its
        arguments must pickle (module-level functions, paths, numbers)."""
        worker = self._take()
        try:
            worker.conn.send((fn, args, kwargs))
            if not worker.conn.poll(self.settings.timeout_s):
                raise WorkerError("timeout", f"took longer than the limit of "
                                             f"{self.settings.timeout_s:g} s")
            answer = worker.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self._retire(worker)
            raise WorkerError("memory", "the worker stopped (it ran out of its "
                                        f"{self.settings.memory_bytes / 2**20:.0f} MB of memory, "
                                        "or crashed)") from None
        except BaseException:
            self._retire(worker)
            raise
        self._idle.put(worker)
        if answer[0] == "ok":
            return answer[1]
        _, kind, message = answer
        raise WorkerError(kind, message)

    def _take(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._closed:
                raise WorkerError("pipeline", "the server is shutting down")
            worker = _Worker(self.settings)
            self._all.add(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._all if w.process.pid is not None]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._all = list(self._all), set()
        for worker in workers:
            worker.kill()


class InlineRunner:
    """Runs calls in the calling thread (tests with engines that do not pickle); same errors."""

    def __init__(self, settings: WorkerSettings):
        self.settings = settings

    def call(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        try:
            return fn(*args, **kwargs)
        except (MvptError, MemoryError) as exc:
            raise WorkerError(_error_kind(exc), str(exc)) from None

    def pids(self) -> list[int]:
        return []

    def close(self) -> None:
        pass
