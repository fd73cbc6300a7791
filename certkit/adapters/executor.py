"""The probe across the workers of a Dask distributed cluster (``--executor``): the one module that imports Dask.

Why Dask and not Ray: Dask distributed is pure Python on PyPI (no native daemon to install), its
``LocalCluster`` runs on one machine for tests and laptops, and tasks can be pinned to one worker
(``workers=[...]``, ``allow_other_workers=False``), which is what keeps the per-server limits global.

How the limits stay global: every server address belongs to exactly one worker, chosen by a hash of its
network (IPv4 /24, IPv6 /48: :func:`~certkit.checks.limits.network_of`), so one worker's
:class:`~certkit.checks.limits.ServerLimits` sees every session to that address and network. A run goes
in three kinds of task: DNS for a batch of targets (any worker), the sessions of each target's addresses
(on the worker that owns each address, with the sessions of one owner's addresses for a batch in one task)
and, with MTA-STS on, the policy check of a domain from its finished sessions (any worker). The client
assembles each target's result and hands it on as soon as it is complete. No Dask lock or semaphore is
taken per session (each would be a round trip to the scheduler). The worker set is read once, when the run
starts: a worker that leaves during the run takes its tasks with it.

Each worker runs one asyncio loop on a thread for all the tasks of a run (``concurrency`` sessions at once
per worker), with the run's options, trust anchors and our certificate and key (sent to the workers: use a
cluster you trust with that key).
"""

from __future__ import annotations

import asyncio
import copyreg
import hashlib
import itertools
import threading
import uuid
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certkit.adapters.transport import ClientIdentity
from certkit.checks.limits import network_of
from certkit.checks.probe import (
    AddressResult,
    ProbeOptions,
    ProbeResult,
    ProgressCallback,
    Target,
    _open_run,
    _ProbeRun,
    parse_target,
)
from certkit.core.trust import AnchorSet, as_anchor_set
from certkit.errors import InputError

__all__ = ["ExecutorSpec", "owner_of", "parse_executor", "probe_distributed"]

_T = TypeVar("_T")


def _load_cert(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def _reduce_cert(cert: x509.Certificate) -> tuple[Any, tuple[bytes]]:
    return _load_cert, (cert.public_bytes(serialization.Encoding.DER),)


def _load_key(der: bytes) -> Any:
    return serialization.load_der_private_key(der, None)


def _reduce_key(key: Any) -> tuple[Any, tuple[bytes]]:
    return _load_key, (key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()),)


def _register_pickling() -> None:
    """cryptography's certificates and keys do not pickle; results and the run's identity cross processes."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    copyreg.pickle(x509.Certificate, _reduce_cert)
    for kind in (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey):
        copyreg.pickle(kind, _reduce_key)


_register_pickling()


@dataclass(frozen=True)
class ExecutorSpec:
    """Where the probe runs: ``local`` (this process), ``dask-local`` (a Dask ``LocalCluster`` of ``workers``
    processes on this machine) or ``dask`` (the scheduler at ``address``)."""

    kind: str
    workers: int = 0
    address: str | None = None


def parse_executor(text: str) -> ExecutorSpec:
    """``local``, ``dask-local``, ``dask-local:N`` or ``dask://HOST:PORT`` (an :class:`InputError` else)."""
    hint = "Use --executor local, dask-local[:WORKERS] or dask://HOST:PORT."
    if text == "local":
        return ExecutorSpec("local")
    if text == "dask-local" or text.startswith("dask-local:"):
        count = text.partition(":")[2] or "2"
        if not count.isdigit() or not 1 <= int(count) <= 256:
            raise InputError(f"Bad --executor {text!r}: the number of workers must be 1 to 256.", hint)
        return ExecutorSpec("dask-local", workers=int(count))
    if text.startswith("dask://") and ":" in text[len("dask://"):]:
        return ExecutorSpec("dask", address="tcp://" + text[len("dask://"):])
    raise InputError(f"Unknown --executor {text!r}.", hint)


@dataclass(frozen=True)
class _RunSpec:
    """What every worker needs to run its part of one run (sent once per worker)."""

    run_id: str
    options: ProbeOptions
    anchors: AnchorSet
    identity: ClientIdentity | None
    our_roots: tuple[x509.Certificate, ...]


class _Engine:
    """One asyncio loop on a daemon thread per worker: every task of a run shares its limits and sessions."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runs: dict[str, tuple[_ProbeRun, Any]] = {}
        threading.Thread(target=self.loop.run_forever, name="certkit-dask-engine", daemon=True).start()

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def run_of(self, spec: _RunSpec) -> _ProbeRun:
        entry = self.runs.get(spec.run_id)
        if entry is None:
            opened = _open_run(spec.options, spec.anchors, spec.identity, None, None, spec.our_roots, 8)
            entry = self.runs[spec.run_id] = (await opened.__aenter__(), opened)
        return entry[0]

    async def forget(self, run_id: str) -> None:
        entry = self.runs.pop(run_id, None)
        if entry is not None:
            await entry[1].__aexit__(None, None, None)


_ENGINES: dict[str, _Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine() -> _Engine:
    """This worker's engine (a threaded cluster has several workers in one process: one engine each)."""
    from distributed import get_worker

    key = get_worker().address
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = _Engine()
        return _ENGINES[key]


_Resolved = tuple[ProbeResult, list[tuple[str, str]], bool]


def _resolve_task(spec: _RunSpec, texts: list[str]) -> list[_Resolved]:
    """Worker: DNS for a batch of targets: each one's result so far, its (host, address) pairs, name security."""
    engine = _engine()

    async def one(run: _ProbeRun, t: Target) -> _Resolved:
        result = ProbeResult(t.text, ours=run.ours)
        pairs, name_secure = await run.resolve(t, result)
        return result, pairs, name_secure

    async def batch() -> list[_Resolved]:
        run = await engine.run_of(spec)
        return list(await asyncio.gather(*(one(run, parse_target(x, spec.options.port)) for x in texts)))

    return engine.call(batch())


#: (the run's number for the target, the target, its (host, address) pairs here, DNSSEC-secure MX)
_Part = tuple[int, str, list[tuple[str, str]], bool]


def _probe_task(spec: _RunSpec, parts: list[_Part]) -> list[list[AddressResult]]:
    """Worker (the owner of these addresses): the sessions of each part, judged; one list per part."""
    engine = _engine()

    async def batch() -> list[list[AddressResult]]:
        run = await engine.run_of(spec)
        return list(await asyncio.gather(*(run.addresses(parse_target(text, spec.options.port), pairs, secure)
                                           for _number, text, pairs, secure in parts)))

    return engine.call(batch())


def _sts_task(spec: _RunSpec, result: ProbeResult) -> ProbeResult:
    """Worker: MTA-STS of a domain target from its finished sessions."""
    engine = _engine()

    async def judge() -> ProbeResult:
        run = await engine.run_of(spec)
        await run.judge_sts(parse_target(result.target, spec.options.port), result)
        return result

    return engine.call(judge())


def _forget_task(run_id: str) -> None:
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
    for engine in engines:
        engine.call(engine.forget(run_id))


def owner_of(address: str, workers: Sequence[str]) -> str:
    """The worker that owns ``address``: the same for every address of one network, whatever the client."""
    digest = hashlib.blake2b(network_of(address).encode(), digest_size=8).digest()
    return workers[int.from_bytes(digest, "big") % len(workers)]


@dataclass
class _Pending:
    """A target whose parts are still at their owners."""

    result: ProbeResult
    pairs: list[tuple[str, str]]
    parts_left: int
    found: dict[tuple[str, str], AddressResult] = field(default_factory=dict)


def probe_distributed(targets: Iterable[str], executor: ExecutorSpec, *, anchors: Any = (),
                      identity: ClientIdentity | None = None, options: ProbeOptions | None = None,
                      progress: ProgressCallback | None = None, our_roots: Sequence[x509.Certificate] = (),
                      window: int = 1000, batch: int = 16) -> Iterator[ProbeResult]:
    """Each target's result as soon as it is complete (in completion order), at most ``window`` targets in flight,
    the work on a Dask cluster (``executor``); see the module docstring."""
    from distributed import Client, LocalCluster, as_completed

    opts = options or ProbeOptions()
    cluster = None
    if executor.kind == "dask-local":
        cluster = LocalCluster(n_workers=executor.workers, threads_per_worker=4, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    elif executor.kind == "dask":
        client = Client(executor.address, timeout=30)
    else:
        raise InputError(f"probe_distributed needs a Dask executor, not {executor.kind!r}.",
                         "Use --executor dask-local or dask://HOST:PORT.")
    spec = _RunSpec(uuid.uuid4().hex, opts, as_anchor_set(anchors), identity, tuple(our_roots))
    try:
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise InputError("The Dask cluster has no worker.", "Start workers, then run again.")
        yield from _Pipeline(client, as_completed(), client.scatter(spec, broadcast=True), workers, opts,
                             progress, window, batch).run(iter(targets))
    finally:
        try:
            client.run(_forget_task, spec.run_id)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


class _Pipeline:
    """The client's side: feeds DNS batches while the window has room, routes parts to owners, assembles."""

    def __init__(self, client: Any, done: Any, spec: Any, workers: list[str], options: ProbeOptions,
                 progress: ProgressCallback | None, window: int, batch: int) -> None:
        self.client, self.done, self.spec, self.workers = client, done, spec, workers
        self.options, self.progress, self.window, self.batch = options, progress, window, batch
        self.flying = 0
        self.what: dict[Any, tuple[str, Any]] = {}
        #: targets waiting for their sessions, by a number of their own (a target may be given twice)
        self.pending: dict[int, _Pending] = {}
        self._numbers = itertools.count()

    def submit(self, kind: str, payload: Any, fn: Any, *args: Any, worker: str | None = None) -> None:
        future = self.client.submit(fn, self.spec, *args, pure=False,
                                    workers=None if worker is None else [worker], allow_other_workers=False)
        self.what[future] = (kind, payload)
        self.done.add(future)

    def feed(self, source: Iterator[str]) -> None:
        while self.flying < self.window:
            texts = list(itertools.islice(source, min(self.batch, self.window - self.flying)))
            if not texts:
                return
            self.flying += len(texts)
            self.submit("resolve", None, _resolve_task, texts)

    def run(self, source: Iterator[str]) -> Iterator[ProbeResult]:
        self.feed(source)
        for future in self.done:
            kind, payload = self.what.pop(future)
            value = future.result()
            finished = (self.resolved(value) if kind == "resolve" else self.probed(payload, value)
                        if kind == "probe" else [value])
            for result in finished:
                self.flying -= 1
                yield result
            self.feed(source)

    def resolved(self, batch: list[_Resolved]) -> list[ProbeResult]:
        finished: list[ProbeResult] = []
        by_owner: dict[str, list[_Part]] = {}
        for result, pairs, secure in batch:
            planned = getattr(self.progress, "planned", None)
            if callable(planned):
                planned(len(pairs))
            if not pairs:
                finished.extend(self.complete(result))
                continue
            owners: dict[str, list[tuple[str, str]]] = {}
            for pair in pairs:
                owners.setdefault(owner_of(pair[1], self.workers), []).append(pair)
            number = next(self._numbers)
            self.pending[number] = _Pending(result, pairs, len(owners))
            for worker, mine in owners.items():
                by_owner.setdefault(worker, []).append((number, result.target, mine, secure))
        for worker, parts in by_owner.items():
            self.submit("probe", parts, _probe_task, parts, worker=worker)
        return finished

    def probed(self, parts: list[_Part], value: list[list[AddressResult]]) -> list[ProbeResult]:
        finished: list[ProbeResult] = []
        for (number, _text, _pairs, _secure), addresses in zip(parts, value, strict=True):
            p = self.pending[number]
            for a in addresses:
                p.found[(a.host, a.address)] = a
                if self.progress is not None:
                    self.progress(a)
            p.parts_left -= 1
            if not p.parts_left:
                del self.pending[number]
                p.result.addresses = [p.found[pair] for pair in p.pairs]
                finished.extend(self.complete(p.result))
        return finished

    def complete(self, result: ProbeResult) -> list[ProbeResult]:
        """The result, or nothing yet when its MTA-STS check goes to a worker first."""
        if self.options.mta_sts == "auto" and parse_target(result.target, self.options.port).is_domain:
            self.submit("sts", None, _sts_task, result)
            return []
        return [result]
