"""Extraction on a Ray cluster: the shard units of :mod:`mvpt.extract` run on Ray actors.

Each worker is an actor that loads the encoders once. Without GPUs a worker takes one CPU and
decodes and encodes its unit itself (its encoders and its decode process on one thread each).
With ``gpus_per_worker`` > 0 (or ``split=True``, the same pipeline on CPUs) a worker holds that
many GPUs and only encodes: each unit is decoded by a one-CPU Ray task wherever the cluster has
CPUs, a unit ahead of its encoder.

Decoding is the local engine's (:mod:`mvpt.extract`): a unit's items are decoded in a child
process of the worker or task, with ``decode_timeout_s`` per item, so a file that hangs its
decoder is recorded as failed (timed out) and one that crashes it as failed (crashed), and the
run goes on; neither costs its worker. The driver (the process that called
:func:`mvpt.extract.extract`) writes each shard as its unit comes back, with the same code as
the local engine, so the store has one writer. A unit whose worker dies is redone on a fresh
worker, up to ``max_attempts`` times (then its items are recorded as failed, with the reason);
no other unit is touched. Every row records the node (host name / Ray node id) that extracted
it.

The cluster: ``address=None`` starts a private Ray instance in this process for the run, on
the loopback address only;
``"auto"`` or ``"HOST:PORT"`` joins one started with ``ray start``. Every node needs mvpt
installed and the media at the same paths (a shared file system); the store is written by the
driver only.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from typing import Iterator

from mvpt.encoders import ENCODERS
from mvpt.errors import MvptError, UsageError
from mvpt.extract import (
    DEFAULT_DECODE_TIMEOUT_S,
    DEFAULT_DECODE_WORKERS,
    Decoded,
    DecodePoolKeeper,
    DecodeSpec,
    Decoder,
    Extractor,
    LocalEngine,
    ShardUnit,
    _decoded_stream,
    process_unit,
)
from mvpt.store import ItemResult, compat_problem


def make_engine(name: str = "local", *, address: str | None = None, gpus_per_worker: float = 0,
                decode_workers: int | None = None, decode_timeout_s: float | None = None):
    """The engine named on the command line: "local" or "ray" (``decode_workers`` is the local
    engine's, None: its default; ``decode_timeout_s`` both engines', None: the default
    timeout)."""
    timeout = {} if decode_timeout_s is None else {"decode_timeout_s": decode_timeout_s}
    if name == "local":
        if address or gpus_per_worker:
            raise UsageError("--address and --gpus-per-worker need --engine ray")
        workers = DEFAULT_DECODE_WORKERS if decode_workers is None else decode_workers
        return LocalEngine(decode_workers=workers, **timeout)
    if name == "ray":
        return RayEngine(address=address, gpus_per_worker=gpus_per_worker, **timeout)
    raise UsageError(f"unknown engine {name!r}: use local or ray")


# Ray turns a loopback node address into the machine's network address unless this is off; a
# private Ray (no --address) needs no network, so it keeps to 127.0.0.1.
LOOPBACK_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _import_ray(*, private: bool = False):
    if private:
        for key, value in LOOPBACK_ONLY_ENV.items():
            os.environ.setdefault(key, value)
    try:
        import ray
    except ImportError:
        raise UsageError("the Ray engine needs the ray package: pip install 'mvpt[ray]'") from None
    return ray


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def decode_unit(unit: ShardUnit, spec: DecodeSpec, decoder: Decoder, timeout_s: float | None,
                keeper: DecodePoolKeeper | None = None) -> Iterator[Decoded]:
    """A unit's items decoded in order in a child process, as the local engine decodes them: an
    item that takes longer than ``timeout_s`` (None: no limit) or crashes the decoder comes back
    as a failed :class:`~mvpt.extract.Decoded` with the reason; the others are decoded. The
    child process is ``keeper``'s, kept for the next unit (None: one for this unit)."""
    return _decoded_stream(list(unit.items), spec, 1, timeout_s=timeout_s, decode=decoder,
                           keeper=keeper)


# The decode process of a Ray worker process that runs decode tasks, kept between its tasks.
_TASK_DECODE_POOL = DecodePoolKeeper()


def decode_unit_task(unit: ShardUnit, spec: DecodeSpec, decoder: Decoder,
                     timeout_s: float | None) -> list[Decoded]:
    """:func:`decode_unit` as a Ray task's result (the split pipeline)."""
    one_cpu_decoding()
    return list(decode_unit(unit, spec, decoder, timeout_s, keeper=_TASK_DECODE_POOL))


def one_cpu_decoding() -> None:
    """Decode on one thread in this process's decode children (they inherit the environment),
    unless ``MVPT_DECODE_THREADS`` says otherwise: a worker or decode task holds one CPU and
    the cluster runs one per CPU, so FFmpeg's threads would only compete with the other
    workers, at a higher CPU cost per frame (README "Extraction"), as with the local engine's
    several decode processes."""
    if not os.environ.get("MVPT_DECODE_THREADS", "").strip():
        os.environ["MVPT_DECODE_THREADS"] = "NONE"


def portable_extractor(extractor: Extractor) -> dict | Extractor:
    """What a worker builds its extractor from: the recipe, when it rebuilds this extractor
    (encoders loaded by their registered names, once per worker), else the extractor itself,
    pickled (a subclass, or an encoder the registry does not know)."""
    names = [extractor.recipe[k] for k in ("video_encoder", "audio_encoder")]
    if type(extractor) is Extractor and all(n is None or n in ENCODERS for n in names):
        return extractor.recipe
    return extractor


class ExtractWorker:
    """A Ray actor's state: an extractor built once from the driver's recipe."""

    def __init__(self, build: dict | Extractor, manifest: dict, threads: int,
                 decode_timeout_s: float | None):
        import ray

        os.environ["MVPT_THREADS"] = str(max(1, threads))
        one_cpu_decoding()
        self.node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
        self.decode_timeout_s = decode_timeout_s
        self.decode_pool = DecodePoolKeeper()  # one decode process for all of its units
        self.error = None
        try:
            self.extractor = build if isinstance(build, Extractor) else Extractor(**build)
            problem = compat_problem(manifest, self.extractor.manifest())
            if problem:
                self.error = f"worker on {self.node}: {problem}"
        except MvptError as exc:
            self.error = f"worker on {self.node}: {exc}"

    def ready(self) -> str | None:
        """None when the worker can extract, else why not (one line)."""
        return self.error

    def run_unit(self, unit: ShardUnit) -> list[ItemResult]:
        """Decode (in a child process, a few items ahead) and encode a unit here."""
        decoded = decode_unit(unit, self.extractor.decode_spec(), self.extractor.decoder,
                              self.decode_timeout_s, keeper=self.decode_pool)
        return process_unit(self.extractor, decoded, node=self.node)

    def encode_unit(self, decoded: list[Decoded]) -> list[ItemResult]:
        """Encode a unit that a decode task decoded."""
        return process_unit(self.extractor, decoded, node=self.node)


class RayEngine:
    """Runs shard units on Ray actors; see the module docstring."""

    name = "ray"

    def __init__(self, *, address: str | None = None, gpus_per_worker: float = 0,
                 workers: int | None = None, max_attempts: int = 3,
                 decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
                 split: bool = False, init_options: dict | None = None):
        """``split``: decode in Ray tasks and only encode in the workers even without GPUs (the
        GPU pipeline on CPUs; each worker then leaves a CPU for decoding)."""
        if gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
        if max_attempts < 1:
            raise UsageError(f"max_attempts must be >= 1, got {max_attempts}")
        self.address, self.gpus = address, float(gpus_per_worker)
        self.split = split or self.gpus > 0
        self.decode_timeout_s = decode_timeout_s
        self.requested_workers, self.max_attempts = workers, max_attempts
        self.workers = 0  # started by the last run
        self.init_options = init_options or {}
        self.redone: list[dict] = []
        self.units_run = 0
        self.startup_s = 0.0  # starting the workers (loading the encoders), before any unit

    def report(self) -> dict:
        return {"name": self.name, "address": self.address, "workers": self.workers,
                "gpus_per_worker": self.gpus, "split": self.split,
                "decode_timeout_s": self.decode_timeout_s, "units_run": self.units_run,
                "redone": self.redone, "startup_s": round(self.startup_s, 2)}

    # ------------------------------------------------------------------ cluster
    def _connect(self, ray) -> bool:
        """Join or start Ray; True when this call started it (and must shut it down)."""
        if ray.is_initialized():
            return False
        options = {"include_dashboard": False, "log_to_driver": False,
                   "logging_level": logging.WARNING, **self.init_options}
        try:
            ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "a local Ray instance"
            raise UsageError(f"cannot start or join Ray at {where}: {_one_line(exc)}") from None
        return True

    def _worker_count(self, ray) -> int:
        if self.requested_workers:
            return self.requested_workers
        resources = ray.cluster_resources()
        cpus = resources.get("CPU", 0)
        if self.gpus:
            n = resources.get("GPU", 0) // self.gpus
        else:  # a split pipeline leaves half the CPUs to the decode tasks
            n = cpus // 2 if self.split else cpus
        if n < 1 or (self.split and cpus - n < 1):
            what = f"{self.gpus:g} GPU(s) and one CPU" if self.gpus else "one CPU"
            spare = " and a CPU left for decoding" if self.split else ""
            raise UsageError(f"the Ray cluster has no room for a worker with {what}{spare} "
                             f"(resources: {resources})")
        return int(n)

    def _new_worker(self, ray, extractor: Extractor):
        resources = {"num_cpus": 1, "max_restarts": 0}
        if self.gpus:
            resources["num_gpus"] = self.gpus
        actor = ray.remote(ExtractWorker).options(**resources)
        return actor.remote(portable_extractor(extractor), extractor.manifest(), 1,
                            self.decode_timeout_s)

    def _start_workers(self, ray, extractor: Extractor, n: int) -> list:
        workers = [self._new_worker(ray, extractor) for _ in range(n)]
        try:
            problems = [p for p in ray.get([w.ready.remote() for w in workers]) if p]
        except ray.exceptions.RayError as exc:
            problems = [f"a Ray worker could not start: {_one_line(exc)}"]
        if problems:
            _kill(ray, workers)
            raise MvptError(problems[0])
        return workers

    # ------------------------------------------------------------------ the run
    def run(self, units: list[ShardUnit], extractor: Extractor, *, on_item=None):
        """Yield ``(unit, results)`` as units finish (in any order)."""
        if not units:  # nothing to extract: no cluster needed
            return
        ray = _import_ray(private=self.address is None)
        started = self._connect(ray)
        workers: list = []
        try:
            self.workers = min(self._worker_count(ray), max(1, len(units)))
            start = time.perf_counter()
            workers = self._start_workers(ray, extractor, self.workers)
            self.startup_s = time.perf_counter() - start
            for unit, results in self._schedule(ray, workers, units, extractor):
                for r in results:
                    if on_item:
                        on_item(r)
                yield unit, results
        finally:
            _kill(ray, workers)
            if started:
                ray.shutdown()

    def _submit(self, ray, worker, unit: ShardUnit, extractor: Extractor):
        self.units_run += 1
        if not self.split:
            return worker.run_unit.remote(unit)
        decode = ray.remote(num_cpus=1, max_retries=0)(decode_unit_task)
        decoded = decode.remote(unit, extractor.decode_spec(), extractor.decoder,
                                self.decode_timeout_s)
        return worker.encode_unit.remote(decoded)

    def _schedule(self, ray, workers: list, units: list[ShardUnit], extractor):
        """Keep every worker busy (a GPU worker with its next unit decoding ahead); yield
        ``(unit, results)`` as units finish; redo a unit whose worker died."""
        pending = deque(units)
        in_flight: dict = {}  # object ref -> (worker slot, worker, unit)
        per_worker = 2 if self.split else 1
        load = [0] * len(workers)
        attempts: dict[int, int] = {}

        def fill() -> None:
            for slot, worker in enumerate(workers):
                while pending and load[slot] < per_worker:
                    unit = pending.popleft()
                    in_flight[self._submit(ray, worker, unit, extractor)] = (slot, worker, unit)
                    load[slot] += 1

        fill()
        while in_flight:
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            slot, worker, unit = in_flight.pop(ref)
            load[slot] -= 1
            try:
                results = ray.get(ref)
            except ray.exceptions.RayError as exc:
                if workers[slot] is worker:  # replace it once, however many units it held
                    _kill(ray, [worker])
                    workers[slot] = self._new_worker(ray, extractor)
                attempts[unit.index] = attempts.get(unit.index, 0) + 1
                results = self._redo_or_fail(unit, exc, attempts[unit.index], extractor, pending)
            fill()
            if results is not None:
                yield unit, results

    def _redo_or_fail(self, unit: ShardUnit, exc: Exception, attempt: int, extractor,
                      pending: deque) -> list[ItemResult] | None:
        """Requeue a unit whose worker died (None), or after ``max_attempts`` return its items
        as failed, with the reason."""
        reason = _one_line(exc)[:300]
        self.redone.append({"unit": unit.index, "items": [it.id for it in unit.items],
                            "attempt": attempt, "reason": reason})
        if attempt < self.max_attempts:
            pending.appendleft(unit)
            return None
        self.redone[-1]["gave_up"] = True
        return [extractor.encode(Decoded(it, error=f"{it.path}: its Ray worker failed {attempt} "
                                                   f"times ({reason})")) for it in unit.items]


def _kill(ray, actors: list) -> None:
    for actor in actors:
        try:
            ray.kill(actor)
        except Exception:  # already gone
            pass
