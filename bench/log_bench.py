#!/usr/bin/env python3
"""Benchmark of the Merkle log (issue #2), side by side with pymerkle's SQLite tree in one run.

    python3 bench/log_bench.py [--leaves N] [--batch B] [--proofs K] [--seed S] [--json PATH]

Both sides get the same ``N`` leaves (canonical-JSON commitments of about 150 bytes, as the bridge
writes them, generated deterministically from the seed) in databases in a temporary folder:

* durable batched append, the two sides alternating batch by batch so that they share the machine's
  noise: ours ``MerkleLog.append`` on ``SqliteDatabase`` (WAL, ``synchronous=FULL``), one transaction
  per batch; pymerkle ``SqliteTree.append_entries`` (its documented bulk operation, one transaction
  per call), one call per batch, on its own default connection (rollback journal, ``synchronous=FULL``);
* ours, the queued path as a second figure: ``MerkleLog.enqueue`` inside the writer's
  ``db.transaction(write=True)``, then ``MerkleLog.sequence()``, both durable;
* the roots at ``N`` and at every old size must be equal, and every inclusion path too: pymerkle with
  ``sha256`` and its default security mode hashes as RFC 9162 (leaf prefix 0x00, node prefix 0x01);
* inclusion proofs for ``K`` random ``(index, N)`` and consistency proofs for ``K`` random
  ``(size1, N)``, the same pairs on both sides: *cold pass* (a new instance and connection with empty
  caches answers the ``K`` proofs in turn), *warm* (``--rounds`` more passes, alternating the sides),
  *cold every proof* (each proof from an empty cache: a new ``MerkleLog`` for each of ours; pymerkle
  ``cache_clear()`` before each of ``--pymerkle-cold-proofs`` only, since each one rehashes the tree);
* verification rate of those proofs with each side's own verifier, rounds alternating the sides.

Speed is compared as ratios against pymerkle measured in the same run, because these machines are
noisy; proof times are medians (means, p99 and maxima are printed too). Progress goes to stderr, the
tables to stdout, and with ``--json`` everything to a file, by convention under ``bench/results/``
(ignored by git). The exit status is 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anchoring import merkle
from anchoring.db import SqliteDatabase
from anchoring.log import MerkleLog

try:
    import pymerkle
except ImportError:  # pragma: no cover - the test extra installs it
    pymerkle = None

ORIGIN = "bench.fhir-bridge.example/log"

APPEND_TARGET = 50_000  # leaves/s, durable
PROOF_TARGET_US = 100.0  # µs per proof at 10^6 leaves
PROOF_SPEEDUP_TARGET = 5.0  # times faster than pymerkle

# Resource types in roughly the mix a hospital feed produces; every read is an AuditEvent leaf too.
RESOURCE_TYPES = (
    ("Observation", 40),
    ("AuditEvent", 20),
    ("Encounter", 10),
    ("Condition", 8),
    ("MedicationRequest", 8),
    ("Patient", 6),
    ("DiagnosticReport", 5),
    ("Consent", 3),
)


# ---------------------------------------------------------------------------------------------
# Leaves and timing helpers
# ---------------------------------------------------------------------------------------------


def make_leaves(count: int, seed: int) -> list[bytes]:
    """``count`` leaf commitments, canonical JSON (RFC 8785: sorted keys, no spaces), from ``seed``.

    ``sha256`` stands for SHA-256(salt || JCS(resource)): uniformly random bits, which is what a
    salted hash looks like, so it is drawn from the generator rather than computed.
    """
    rng = random.Random(seed)
    names = [name for name, _ in RESOURCE_TYPES]
    weights = [weight for _, weight in RESOURCE_TYPES]
    types = rng.choices(names, weights, k=count)
    leaves = []
    for resource_type in types:
        version = 1 if rng.random() < 0.8 else rng.randint(2, 9)
        commitment = {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "sha256": f"{rng.getrandbits(256):064x}",
            "type": resource_type,
            "version": version,
        }
        leaves.append(json.dumps(commitment, sort_keys=True, separators=(",", ":")).encode())
    return leaves


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Progress:
    """Prints a phase's progress to stderr at most every ``every`` seconds."""

    def __init__(self, phase: str, total: int, every: float = 5.0) -> None:
        self.phase, self.total, self.every = phase, total, every
        self.start = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every and done < self.total:
            self.last = now
            rate = done / (now - self.start)
            log(f"  {self.phase}: {done:,}/{self.total:,} ({100 * done / self.total:.0f} %, {rate:,.0f}/s)")


@dataclass
class Timings:
    """Per-operation durations in seconds."""

    samples: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def summary(self) -> dict[str, float]:
        s = sorted(self.samples)
        n = len(s)
        return {
            "count": n,
            "mean_us": 1e6 * statistics.fmean(s),
            "p50_us": 1e6 * s[n // 2],
            "p99_us": 1e6 * s[min(n - 1, (99 * n) // 100)],
            "max_us": 1e6 * s[-1],
            "total_s": sum(s),
        }


def rate_of(calls: Sequence[Callable[[], Any]], min_seconds: float = 0.5) -> float:
    """Calls per second, repeating the whole sequence until at least ``min_seconds`` have passed."""
    clock = time.perf_counter
    done, t0 = 0, clock()
    while True:
        for call in calls:
            call()
        done += len(calls)
        elapsed = clock() - t0
        if elapsed >= min_seconds:
            return done / elapsed


# ---------------------------------------------------------------------------------------------
# The two sides, behind one interface so that every phase runs them alike and interleaved
# ---------------------------------------------------------------------------------------------


class Ours:
    """anchoring.log.MerkleLog on anchoring.db.SqliteDatabase (WAL, synchronous=FULL)."""

    name = "ours"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = SqliteDatabase(path)
        self.log = MerkleLog(self.db, ORIGIN)
        self.log.ensure_schema()

    def append(self, batch: list[bytes]) -> None:
        self.log.append(batch)

    def settings(self) -> dict[str, Any]:
        with self.db.transaction() as cur:
            cur.execute("PRAGMA journal_mode")
            journal = cur.fetchone()[0]
            cur.execute("PRAGMA synchronous")
            synchronous = cur.fetchone()[0]
        return {"journal_mode": journal, "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[synchronous]}

    def reopen(self) -> None:
        """A new connection (empty SQLite page cache) and a new log (empty tile cache)."""
        self.db.close()
        self.db = SqliteDatabase(self.path)
        self.log = MerkleLog(self.db, ORIGIN)

    def forget(self) -> None:
        """Empty the tile cache (a fresh MerkleLog on the same connection)."""
        self.log = MerkleLog(self.db, ORIGIN)

    def prover(self, kind: str) -> Callable[[int, int], Any]:
        log_ = self.log
        if kind == "inclusion":
            return lambda index, size: log_.inclusion_proof(index, size)[1]
        return lambda size1, size2: log_.consistency_proof(size1, size2)[1]

    def root(self, size: int) -> bytes:
        return self.log.root_at(size)

    def verifier(self, kind: str, leaf_hashes: list[bytes], roots: dict[int, bytes]) -> Callable[..., None]:
        if kind == "inclusion":
            return lambda index, size, proof: merkle.verify_inclusion(
                index, size, leaf_hashes[index], proof, roots[size])
        return lambda size1, size2, proof: merkle.verify_consistency(size1, size2, roots[size1], roots[size2], proof)

    def close(self) -> None:
        self.db.close()


class Pymerkle:
    """pymerkle.SqliteTree with its defaults: sha256, security on (prefixes 0x00 and 0x01)."""

    name = "pymerkle"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = pymerkle.SqliteTree(str(path), algorithm="sha256")

    def append(self, batch: list[bytes]) -> None:
        # The documented bulk operation: one transaction per call; hashing chunk = the whole batch.
        self.tree.append_entries(batch, chunksize=len(batch))

    def settings(self) -> dict[str, Any]:
        con = self.tree.con
        synchronous = con.execute("PRAGMA synchronous").fetchone()
        return {
            "journal_mode": con.execute("PRAGMA journal_mode").fetchone(),
            "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[synchronous],
        }

    def reopen(self) -> None:
        """A new instance: new connection, empty subroot cache."""
        self.tree.close()
        self.tree = pymerkle.SqliteTree(str(self.path), algorithm="sha256")

    def forget(self) -> None:
        self.tree.cache_clear()

    def prover(self, kind: str) -> Callable[[int, int], Any]:
        tree = self.tree
        if kind == "inclusion":  # pymerkle numbers leaves from one; sizes are counts on both sides
            return lambda index, size: tree.prove_inclusion(index + 1, size)
        return lambda size1, size2: tree.prove_consistency(size1, size2)

    def root(self, size: int) -> bytes:
        return self.tree.get_root(size)

    def verifier(self, kind: str, leaf_hashes: list[bytes], roots: dict[int, bytes]) -> Callable[..., None]:
        if kind == "inclusion":
            return lambda index, size, proof: pymerkle.verify_inclusion(
                leaf_hashes[index], roots[size], proof, index=index + 1, size=size)
        return lambda size1, size2, proof: pymerkle.verify_consistency(
            roots[size1], roots[size2], proof, prior_size=size1, later_size=size2)

    def close(self) -> None:
        self.tree.close()


def append_interleaved(sides: list[Any], leaves: list[bytes], batch: int, limits: dict[str, int]) -> dict[str, Any]:
    """Append the same batches to every side, alternating batch by batch so that both see the same
    machine noise; each side's clock runs only during its own ``append`` calls."""
    clock = time.perf_counter
    seconds = {side.name: 0.0 for side in sides}
    batches = {side.name: Timings() for side in sides}
    done = {side.name: 0 for side in sides}
    progress = Progress("append, interleaved", len(leaves))
    for start in range(0, len(leaves), batch):
        for side in sides:
            chunk = leaves[start : min(start + batch, limits[side.name])]
            if not chunk:
                continue
            t0 = clock()
            side.append(chunk)
            elapsed = clock() - t0
            seconds[side.name] += elapsed
            batches[side.name].add(elapsed)
            done[side.name] += len(chunk)
        progress.update(start + batch)
    out = {}
    for side in sides:
        summary = batches[side.name].summary()
        out[side.name] = {
            "leaves": done[side.name],
            "seconds": seconds[side.name],
            "rate": done[side.name] / seconds[side.name],
            "batch_ms": {"mean": summary["mean_us"] / 1000, "p50": summary["p50_us"] / 1000,
                         "p99": summary["p99_us"] / 1000, "max": summary["max_us"] / 1000},
            "settings": side.settings(),
            "db_bytes": side.path.stat().st_size,
        }
    return out


def queued_path(path: Path, leaves: list[bytes], batch: int) -> dict[str, Any]:
    """Writers enqueue a batch in their own transaction; the sequencer then gives it indices."""
    db = SqliteDatabase(path)
    merkle_log = MerkleLog(db, ORIGIN)
    merkle_log.ensure_schema()
    progress = Progress("ours queued", len(leaves))
    clock = time.perf_counter
    enqueue_s = sequence_s = 0.0
    for start in range(0, len(leaves), batch):
        chunk = leaves[start : start + batch]
        t0 = clock()
        with db.transaction(write=True) as cur:
            for data in chunk:
                MerkleLog.enqueue(cur, data)
        t1 = clock()
        sequenced = merkle_log.sequence(max_batch=batch)
        t2 = clock()
        enqueue_s += t1 - t0
        sequence_s += t2 - t1
        if sequenced != len(chunk):
            raise RuntimeError(f"sequence() took {sequenced} entries, expected the whole batch of {len(chunk)}")
        progress.update(start + batch)
    size, root = merkle_log.state()
    db.close()
    return {
        "leaves": size,
        "root": root.hex(),
        "seconds": enqueue_s + sequence_s,
        "rate": size / (enqueue_s + sequence_s),
        "enqueue_rate": size / enqueue_s,
        "sequence_rate": size / sequence_s,
    }


def time_pass(prove: Callable[[int, int], Any], pairs: list[tuple[int, int]], phase: str) -> tuple[Timings, list[Any]]:
    """Time each proof of ``pairs`` on its own; returns the timings and the proofs."""
    timings, proofs = Timings(), []
    progress = Progress(phase, len(pairs))
    clock = time.perf_counter
    for i, (a, b) in enumerate(pairs):
        t0 = clock()
        proof = prove(a, b)
        timings.add(clock() - t0)
        proofs.append(proof)
        progress.update(i + 1)
    return timings, proofs


def proof_phase(sides: list[Any], kind: str, pairs: list[tuple[int, int]], rounds: int,
                cold_every: dict[str, int]) -> dict[str, Any]:
    """Cold pass, warm passes (interleaved across sides) and cold-every-proof for one kind."""
    out: dict[str, Any] = {side.name: {} for side in sides}
    proofs: dict[str, list[Any]] = {}
    for side in sides:
        side.reopen()
        timings, proofs[side.name] = time_pass(side.prover(kind), pairs, f"{side.name} {kind} cold pass")
        out[side.name]["cold_pass"] = timings.summary()
        log(f"  {side.name} {kind} cold pass: median {timings.summary()['p50_us']:,.1f} µs")
    warm = {side.name: Timings() for side in sides}
    for r in range(rounds):
        for side in sides:
            timings, again = time_pass(side.prover(kind), pairs, f"{side.name} {kind} warm pass {r + 1}")
            warm[side.name].samples += timings.samples
            if side.name == "ours" and again != proofs[side.name]:
                raise RuntimeError(f"ours: {kind} proofs differ between passes")
    for side in sides:
        out[side.name]["warm"] = warm[side.name].summary()
        log(f"  {side.name} {kind} warm ({rounds} passes): median {out[side.name]['warm']['p50_us']:,.1f} µs")
    for side in sides:
        every = Timings()
        count = min(cold_every[side.name], len(pairs))
        clock = time.perf_counter
        for i, (a, b) in enumerate(pairs[:count]):
            side.forget()
            prove = side.prover(kind)
            t0 = clock()
            prove(a, b)
            every.add(clock() - t0)
            if every.samples[-1] > 0.5:
                log(f"  {side.name} {kind} cold every proof: {i + 1}/{count} ({every.samples[-1]:.2f} s)")
        out[side.name]["cold_every"] = every.summary()
        log(f"  {side.name} {kind} cold every proof: median {out[side.name]['cold_every']['p50_us']:,.1f} µs "
            f"over {count} proofs")
    return {"timings": out, "proofs": proofs}


def verify_phase(sides: list[Any], kind: str, pairs: list[tuple[int, int]], proofs: dict[str, list[Any]],
                 leaf_hashes: list[bytes], roots: dict[int, bytes], rounds: int) -> dict[str, dict[str, float]]:
    """Verification rate per side: every proof verified once first, then interleaved timed rounds."""
    calls = {}
    for side in sides:
        verify = side.verifier(kind, leaf_hashes, roots)
        calls[side.name] = [
            lambda a=a, b=b, p=p, verify=verify: verify(a, b, p)
            for (a, b), p in zip(pairs, proofs[side.name], strict=True)
        ]
        for call in calls[side.name]:
            call()
    rates: dict[str, list[float]] = {side.name: [] for side in sides}
    for _ in range(rounds):
        for side in sides:
            rates[side.name].append(rate_of(calls[side.name], min_seconds=0.2))
    return {name: {"median": statistics.median(r), "best": max(r), "rounds": r} for name, r in rates.items()}


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "pymerkle": getattr(pymerkle, "__version__", None),
        "loadavg_at_start": os.getloadavg(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    n, k = args.leaves, args.proofs
    m = n if pymerkle is None else min(args.pymerkle_leaves or n, n)
    if m < 2:
        raise SystemExit("pymerkle needs at least 2 leaves")
    results: dict[str, Any] = {
        "command": "python3 bench/log_bench.py " + " ".join(sys.argv[1:]),
        "parameters": {"leaves": n, "pymerkle_leaves": m, "batch": args.batch, "proofs": k, "seed": args.seed,
                       "rounds": args.rounds},
        "machine": machine(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    base = Path(tempfile.mkdtemp(prefix="log_bench-", dir=args.dir))
    t_start = time.perf_counter()
    sides: list[Any] = []
    try:
        log(f"building {n:,} leaves (seed {args.seed}); databases in {base}")
        leaves = make_leaves(n, args.seed)
        leaf_hashes = [merkle.leaf_hash(d) for d in leaves]
        results["leaf_bytes_mean"] = statistics.fmean(len(d) for d in leaves)
        log(f"  e.g. ({len(leaves[0])} bytes) {leaves[0].decode()}")

        # The same pairs on both sides, against the tree of size m (the whole tree by default).
        rng = random.Random(args.seed + 1)
        pairs = {
            "inclusion": [(rng.randrange(m), m) for _ in range(k)],
            "consistency": [(rng.randint(1, m - 1), m) for _ in range(k)],
        }

        sides.append(Ours(base / "ours.db"))
        if pymerkle is not None:
            sides.append(Pymerkle(base / "pymerkle.db"))
        else:
            log("pymerkle is not installed (pip install pymerkle==7.0.0): measuring our side only")
        names = " and ".join(side.name for side in sides)
        log(f"durable batched append, {names} interleaved batch by batch ({args.batch:,} leaves a transaction)")
        results["append"] = append_interleaved(sides, leaves, args.batch, {"ours": n, "pymerkle": m})
        for name, figures in results["append"].items():
            log(f"  {name}: {figures['rate']:,.0f} leaves/s")

        log("roots at N")
        r0 = time.perf_counter()
        roots = {side.name: side.root(m) for side in sides}
        results["roots_seconds"] = time.perf_counter() - r0  # pymerkle hashes the whole tree here
        ours_root = sides[0].log.state()[1]
        results["root"] = ours_root.hex()
        if len(sides) > 1 and roots["pymerkle"] != roots["ours"]:
            raise RuntimeError(f"roots differ at size {m}: ours {roots['ours'].hex()}, pymerkle {roots['pymerkle'].hex()}")

        if args.queued_leaves != 0:
            q = min(args.queued_leaves or n, n)
            log(f"ours, queued path: enqueue in the writer's transaction, then sequence(), {q:,} leaves")
            queue_db = base / "ours-queue.db"
            results["queued"] = queued_path(queue_db, leaves[:q], args.batch)
            if q == n and results["queued"]["root"] != ours_root.hex():
                raise RuntimeError("ours: the queued path and append give different roots")
            for suffix in ("", "-wal", "-shm"):
                Path(str(queue_db) + suffix).unlink(missing_ok=True)
            log(f"  {results['queued']['rate']:,.0f} leaves/s")

        results["proofs"], results["verify"] = {}, {}
        cold_every = {"ours": k, "pymerkle": args.pymerkle_cold_proofs}
        tree_roots: dict[str, dict[int, bytes]] = {}
        all_proofs = {}
        for kind in ("inclusion", "consistency"):
            log(f"{k:,} {kind} proofs at size {m:,}, the same pairs on each side")
            phase = proof_phase(sides, kind, pairs[kind], args.rounds, cold_every)
            results["proofs"][kind] = phase["timings"]
            all_proofs[kind] = phase["proofs"]
        for side in sides:
            tree_roots[side.name] = {m: side.root(m)}
            for size1, _ in pairs["consistency"]:
                tree_roots[side.name][size1] = side.root(size1)

        if len(sides) > 1:
            checks = {
                "root_equal": roots["ours"] == roots["pymerkle"],
                "roots_at_every_size1_equal": tree_roots["ours"] == tree_roots["pymerkle"],
                "inclusion_paths_equal": all(
                    theirs.path[0] == leaf_hashes[index] and theirs.path[1:] == ours
                    for (index, _), ours, theirs in zip(
                        pairs["inclusion"], all_proofs["inclusion"]["ours"], all_proofs["inclusion"]["pymerkle"],
                        strict=True)
                ),
            }
            results["checks"] = checks
            log(f"  checks: {checks}")
            if not all(checks.values()):
                raise RuntimeError(f"the two trees disagree: {checks}")

        for kind in ("inclusion", "consistency"):
            log(f"verification of the {kind} proofs, {args.rounds} interleaved rounds")
            results["verify"][kind] = verify_phase(
                sides, kind, pairs[kind], all_proofs[kind], leaf_hashes, tree_roots["ours"], args.rounds)
            for name, figures in results["verify"][kind].items():
                log(f"  {name}: {figures['median']:,.0f} proofs/s")
    finally:
        for side in sides:
            side.close()
        if args.keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    results["total_seconds"] = time.perf_counter() - t_start
    return results


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

PHASES = (("warm", "warm"), ("cold_pass", "cold pass"), ("cold_every", "cold every proof"))


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric: ours, pymerkle, ratio (> 1: ours better), target, result.

    Proof times are medians (robust on a noisy shared machine); means and p99 are in the JSON and in
    the second table.
    """
    out = []

    def row(metric, ours, theirs, unit, higher_is_better, target=None, check=None):
        ratio = None
        if theirs is not None and ours:
            ratio = ours / theirs if higher_is_better else theirs / ours
        passed = None if check is None else check(ours, ratio)
        out.append({"metric": metric, "unit": unit, "ours": ours, "pymerkle": theirs, "ratio": ratio,
                    "target": target, "pass": passed})

    append = results["append"]
    theirs = append.get("pymerkle", {}).get("rate")
    append_target = f">= {APPEND_TARGET:,} leaves/s"
    row("durable append, batched (log.append)", append["ours"]["rate"], theirs, "leaves/s", True,
        append_target, lambda o, r: o >= APPEND_TARGET)
    if "queued" in results:
        row("durable append, queued (enqueue + sequence)", results["queued"]["rate"], theirs, "leaves/s", True,
            append_target, lambda o, r: o >= APPEND_TARGET)

    proof_target = f"<= {PROOF_TARGET_US:.0f} µs, >= {PROOF_SPEEDUP_TARGET:.0f}x"

    def proof_check(o, r):
        return o <= PROOF_TARGET_US and (r is None or r >= PROOF_SPEEDUP_TARGET)

    for kind in ("inclusion", "consistency"):
        timings = results["proofs"][kind]
        for phase, label in PHASES:
            metric = f"{kind} proof, {label}, median"
            if phase == "cold_every" and "pymerkle" in timings:
                metric += f" (pymerkle: {timings['pymerkle'][phase]['count']} proofs)"
            theirs = timings["pymerkle"][phase]["p50_us"] if "pymerkle" in timings else None
            row(metric, timings["ours"][phase]["p50_us"], theirs, "µs", False, proof_target, proof_check)
    for kind in ("inclusion", "consistency"):
        rates = results["verify"][kind]
        row(f"{kind} verification, median of rounds", rates["ours"]["median"],
            rates["pymerkle"]["median"] if "pymerkle" in rates else None, "proofs/s", True)
    return out


def fmt(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "µs":
        if value >= 1_000_000:
            return f"{value / 1e6:,.2f} s"
        return f"{value:,.1f} µs" if value < 10_000 else f"{value / 1000:,.1f} ms"
    return f"{value:,.0f} {unit}"


def markdown(header: Sequence[str], lines: Sequence[Sequence[Any]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(c) for c in lines)]


def table(results: dict[str, Any]) -> str:
    p, mach = results["parameters"], results["machine"]
    main_lines = []
    for r in results["rows"]:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:,.1f}x"
        result = {True: "pass", False: "FAIL", None: "-"}[r["pass"]]
        main_lines.append((r["metric"], fmt(r["ours"], r["unit"]), fmt(r["pymerkle"], r["unit"]), ratio,
                           r["target"] or "-", result))
    out = [
        f"N = {p['leaves']:,} leaves (pymerkle: {p['pymerkle_leaves']:,}), mean leaf {results['leaf_bytes_mean']:.0f} "
        f"bytes, batch {p['batch']:,}, {p['proofs']:,} proofs of each kind at size {p['pymerkle_leaves']:,}, "
        f"{p['rounds']} warm/verify rounds, seed {p['seed']}",
        f"Python {mach['python']}, SQLite {mach['sqlite']}, pymerkle {mach['pymerkle']}, {mach['cpus']} CPUs, "
        f"load average at start {', '.join(f'{x:.2f}' for x in mach['loadavg_at_start'])}",
        "ratio: times better than pymerkle in the same run (rate: ours/pymerkle; time: pymerkle/ours)",
        "",
        *markdown(("metric", "ours", "pymerkle", "ratio", "target", "result"), main_lines),
        "",
    ]
    detail = []
    for kind in ("inclusion", "consistency"):
        for phase, label in PHASES:
            cells = [f"{kind}, {label}"]
            for name in ("ours", "pymerkle"):
                s = results["proofs"][kind].get(name, {}).get(phase)
                cells += ["-", "-", "-"] if s is None else [
                    fmt(s["mean_us"], "µs"), fmt(s["p99_us"], "µs"), fmt(s["max_us"], "µs")]
            detail.append(cells)
    out += markdown(("proof generation", "ours mean", "ours p99", "ours max", "pymerkle mean", "pymerkle p99",
                     "pymerkle max"), detail)
    append = results["append"]
    notes = [
        "",
        "append settings: " + "; ".join(
            f"{name} journal_mode={a['settings']['journal_mode']} synchronous={a['settings']['synchronous']}"
            for name, a in append.items()),
    ]
    if "queued" in results:
        q = results["queued"]
        notes.append(f"queued path split: enqueue alone {q['enqueue_rate']:,.0f} leaves/s, "
                     f"sequence() alone {q['sequence_rate']:,.0f} leaves/s")
    checks = results.get("checks")
    if checks:
        notes.append("same root at N: {root_equal}; same roots at every size1: {roots_at_every_size1_equal}; "
                     "same inclusion paths: {inclusion_paths_equal}".format(**checks))
    notes.append(f"root at N: {results['root']}")
    notes.append(f"total run time {results['total_seconds']:.0f} s")
    return "\n".join(out + notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, default=1_000_000, help="N, leaves in each tree (default 1,000,000)")
    parser.add_argument("--batch", type=int, default=10_000, help="leaves per durable transaction (default 10,000)")
    parser.add_argument("--proofs", type=int, default=1_000, help="K, proofs of each kind (default 1,000)")
    parser.add_argument("--seed", type=int, default=2, help="seed of the leaves and the proof pairs (default 2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="warm passes and verification rounds, alternating the sides (default 3)")
    parser.add_argument("--pymerkle-leaves", type=int, default=None,
                        help="give pymerkle only the first M leaves and take every proof at size M "
                             "(default: N, side by side on the whole tree)")
    parser.add_argument("--pymerkle-cold-proofs", type=int, default=5,
                        help="pymerkle proofs timed from an empty cache, each rehashing the tree (default 5)")
    parser.add_argument("--queued-leaves", type=int, default=None,
                        help="leaves for the queued-path figure (default N; 0 skips it)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the results as JSON to this file, e.g. bench/results/log_bench.json")
    parser.add_argument("--dir", default=None, help="parent of the temporary folder (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary databases")
    args = parser.parse_args(argv)
    if args.leaves < 2 or args.batch < 1 or args.proofs < 1 or args.rounds < 1:
        parser.error("--leaves must be >= 2; --batch, --proofs and --rounds >= 1")

    results = run(args)
    results["rows"] = rows(results)
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n")
        log(f"results written to {args.json}")
    return 0 if all(r["pass"] is not False for r in results["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
