"""Converting and validating in worker processes, so ingest uses every core.

Conversion and FHIR validation are pure computing and dominate ingest; in one process they share
the interpreter lock with the listener and the database writes.  A :class:`PreparePool` runs
:func:`bridge.pipeline.prepare` in ``workers`` processes (started with ``spawn``: the parent runs
threads, which must not be forked), each loading the mappings once.  The parent keeps all I/O.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from .hl7.types import Conversion, HL7Error
from .pipeline import Prepared, prepare
from .store import CanonicalResource

# HL7Error does not survive pickling (its constructor takes four arguments): it crosses as a tuple.
# Resources cross in their canonical form only: that is all the parent stores.
_Shipped = tuple[list[CanonicalResource], tuple[str, str, str, str] | None, list[str], list[str]]

_convert = None


def _init(override_dir: str | None) -> None:
    global _convert
    from .convert import convert, load_mappings

    mappings = load_mappings(override_dir or None)

    def run(raw: bytes) -> Conversion:
        return convert(raw, mappings)

    _convert = run


def _prepare(raw: bytes) -> _Shipped:
    assert _convert is not None  # set by the pool's initializer
    p = prepare(raw, _convert)
    error = None if p.error is None else (p.error.code, p.error.location, p.error.text, p.error.severity)
    return p.canonical, error, p.unmapped, p.warnings


def _unship(shipped: _Shipped) -> Prepared:
    canonical, error, unmapped, warnings = shipped
    return Prepared([], None if error is None else HL7Error(*error), unmapped, warnings, canonical)


class PreparePool:
    def __init__(self, workers: int, override_dir: str | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self._executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_init, initargs=(override_dir,))
        self.workers = workers

    def __call__(self, raws: Sequence[bytes]) -> list[Prepared]:
        chunk = max(1, len(raws) // (self.workers * 2))
        return [_unship(s) for s in self._executor.map(_prepare, raws, chunksize=chunk)]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
