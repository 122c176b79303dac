"""Two versions of the project, one benchmark, taking turns: figures as ratios against a baseline
measured in the same run (these machines are shared and noisy; a figure alone says little).

    python3 bench/ab.py BASE NEW [--pairs 4] [--metric PATH ...] -- bench/ingest_bench.py [ARGS...]

BASE and NEW are git revisions of this repository (NEW may be ``WORKTREE``: the files as they are
now, uncommitted changes included).  Each is exported to a temporary folder beside a link to the
shared corpus, and the benchmark script (a path inside the project, which must print one JSON
object on standard output, as ``bench/ingest_bench.py`` does) runs from each in turn, the order
swapped every pair so that neither always runs second.  ``--metric`` names a number in that
object by its dotted path (``cpu_ms_per_msg.workers``); by default ``end_to_end_msgs_per_s``.
Prints each pair as it finishes, then per metric the two ranges and the ratios NEW/BASE (their
range and median), and with ``--json PATH`` writes it all.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKTREE = "WORKTREE"


def dig(report: dict, path: str) -> float:
    """The number at a dotted path of a report (KeyError naming the path if it is not there)."""
    value: Any = report
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"{path}: the benchmark's report has no {part!r} there")
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KeyError(f"{path}: {value!r} is not a number")
    return float(value)


def last_json_object(stdout: str) -> dict:
    """The JSON object a benchmark printed last (it may print other lines before it)."""
    decoder = json.JSONDecoder()
    found = None
    at = stdout.find("{")
    while at != -1:
        try:
            value, end = decoder.raw_decode(stdout, at)
        except json.JSONDecodeError:
            at = stdout.find("{", at + 1)
            continue
        if isinstance(value, dict):
            found = value
        at = stdout.find("{", end)
    if found is None:
        raise ValueError("the benchmark printed no JSON object on standard output")
    return found


def summary(pairs: list[tuple[float, float]]) -> dict:
    """Ranges of both sides and the ratios new/base of each pair (a base of 0 gives no ratio)."""
    ratios = [new / base for base, new in pairs if base]
    out: dict = {
        "base": [min(b for b, _ in pairs), max(b for b, _ in pairs)],
        "new": [min(n for _, n in pairs), max(n for _, n in pairs)],
    }
    if ratios:
        out["ratio"] = {"min": round(min(ratios), 3), "max": round(max(ratios), 3),
                        "median": round(statistics.median(ratios), 3)}
    return out


def export(rev: str, into: Path, root: Path = ROOT) -> Path:
    """The files of ``rev`` (or of the work tree, tracked and untracked but not ignored) in ``into``."""
    into.mkdir(parents=True)
    if rev == WORKTREE:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                check=True, capture_output=True).stdout.split(b"\0")
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for name in filter(None, listed):
                path = root / os.fsdecode(name)
                if path.exists():  # listed but deleted in the work tree: not part of it
                    tar.add(path, arcname=os.fsdecode(name), recursive=False)
        data = archive.getvalue()
    else:
        done = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", rev], capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"git cannot export {rev!r}: {done.stderr.decode(errors='replace').strip()}; "
                             "give a commit, tag or branch of this repository, or WORKTREE")
        data = done.stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_once(tree: Path, script: str, args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, str(tree / script), *args], cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"{script} failed in {tree.name} (exit {done.returncode}):\n{tail}")
    return last_json_object(done.stdout)


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, theirs = _split(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("new")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--metric", action="append", help="dotted path of a number in the report (repeatable)")
    parser.add_argument("--json", type=Path, help="write the pairs and the summary here")
    args = parser.parse_args(ours)
    if not theirs:
        parser.error("name the benchmark after --, e.g. -- bench/ingest_bench.py")
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    script, script_args = theirs[0], theirs[1:]
    metrics = args.metric or ["end_to_end_msgs_per_s"]
    shared = root.parent / "shared"
    with tempfile.TemporaryDirectory(prefix="fhir-bridge-ab-") as tmp:
        place = Path(tmp)
        if shared.exists():
            (place / "shared").symlink_to(shared)  # the trees find the corpus beside them, as the project does
        trees = {"base": export(args.base, place / "base", root), "new": export(args.new, place / "new", root)}
        if not (trees["base"] / script).exists() or not (trees["new"] / script).exists():
            raise SystemExit(f"{script} is not in both versions: name a benchmark both have")
        values: dict[str, list[tuple[float, float]]] = {m: [] for m in metrics}
        reports = []
        for n in range(args.pairs):
            order = ("base", "new") if n % 2 == 0 else ("new", "base")  # neither always runs second
            got = {side: run_once(trees[side], script, script_args) for side in order}
            reports.append(got)
            line = []
            for m in metrics:
                try:
                    pair = (dig(got["base"], m), dig(got["new"], m))
                except KeyError as exc:
                    raise SystemExit(f"{exc.args[0]}; name a number the report holds with --metric") from None
                values[m].append(pair)
                line.append(f"{m} {pair[0]:g} -> {pair[1]:g}")
            print(f"pair {n + 1}/{args.pairs} ({' then '.join(order)}): " + "; ".join(line), file=sys.stderr, flush=True)
    result = {"base": args.base, "new": args.new, "script": theirs, "pairs": args.pairs,
              "metrics": {m: summary(v) for m, v in values.items()}}
    for m, s in result["metrics"].items():
        ratio = s.get("ratio")
        told = f"ratio {ratio['min']}-{ratio['max']}x, median {ratio['median']}x" if ratio else "no ratio (a base of 0)"
        print(f"{m}: {args.base} {s['base'][0]:g}-{s['base'][1]:g}, {args.new} {s['new'][0]:g}-{s['new'][1]:g}; {told}")
    if args.json:
        args.json.write_text(json.dumps({**result, "reports": reports}, indent=2))
    return 0


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """ab.py's own arguments, and the benchmark's command after ``--``."""
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1:]


if __name__ == "__main__":
    sys.exit(main())
