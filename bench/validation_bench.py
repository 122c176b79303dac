"""FHIR R4 validation of converter output: full ``fhir.resources`` validation vs the shape fast path.

    python3 bench/validation_bench.py [--messages 400] [--repeat 3]

ADT^A01 and ORU^R01 variants (distinct control ids and patients, as in ingest_bench) are converted
once, before the clock starts; then, on one core, every resource is validated with the R4B model
alone (what ``bridge.validation`` did before) and through :func:`bridge.validation.problems`
after one warm-up pass that lets it learn the shapes (its cache is per process, so a worker learns
each shape once).  Both must agree on every resource.  The best of ``--repeat`` runs is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest_bench import messages  # noqa: E402
from bridge import validation_shapes  # noqa: E402
from bridge.convert import convert, load_mappings  # noqa: E402
from bridge.validation import _model, problems  # noqa: E402


def full_valid(resource: dict) -> bool:
    try:
        _model(resource["resourceType"]).model_validate(resource)
    except ValueError:
        return False
    return True


def rate(resources: list[dict], check, repeat: int) -> tuple[float, list[bool]]:  # type: ignore[no-untyped-def]
    best, verdicts = 0.0, []
    for _ in range(repeat):
        start = time.perf_counter()
        verdicts = [check(r) for r in resources]
        best = max(best, len(resources) / (time.perf_counter() - start))
    return best, verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    mappings = load_mappings()
    resources = [r for m in messages(args.messages, "V") for r in convert(m, mappings).resources]

    full_rate, full = rate(resources, full_valid, args.repeat)
    validation_shapes.clear()
    start = time.perf_counter()
    for r in resources:  # cold: every new shape is validated fully, then learnt
        problems(r)
    cold_rate = len(resources) / (time.perf_counter() - start)
    fast_rate, fast = rate(resources, lambda r: not problems(r), args.repeat)
    if fast != full:
        print("fast path and full validation disagree", file=sys.stderr)
        return 1
    print(json.dumps({
        "messages": args.messages, "resources": len(resources), "valid": sum(full),
        "shapes": validation_shapes._learnt,
        "full_resources_per_s": round(full_rate), "cold_pass_resources_per_s": round(cold_rate),
        "fast_resources_per_s": round(fast_rate), "ratio": round(fast_rate / full_rate, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
