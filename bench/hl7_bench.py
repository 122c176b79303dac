"""HL7v2 parse and convert rates: our lazy parser vs python-hl7 vs hl7apy on the same corpus messages.

    python3 bench/hl7_bench.py [--corpus ../shared/corpus] [--seconds 2] [--hl7apy-messages 40]

Every parser gets the same messages (those all three accept), with segments ended by CR as
python-hl7 and hl7apy require.  "ours (lazy)" splits segments only, as ingest needs; "ours (full)"
also splits and unescapes every field, which is the fair comparison with python-hl7's full parse.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.convert import convert, load_mappings  # noqa: E402
from bridge.hl7.parser import parse, parse_header, split_batch  # noqa: E402
from bridge.hl7.types import HL7Error  # noqa: E402


def _rate(fn: Callable[[object], object], items: list, seconds: float) -> float:
    """Messages per second over whole passes of items, for at least ``seconds``."""
    done, start = 0, time.perf_counter()
    while True:
        for item in items:
            fn(item)
        done += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def _full(raw: bytes) -> None:
    msg = parse(raw)
    for seg in msg.segments:
        for n in range(1, len(seg) + 1):
            seg.parsed(n)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    ap.add_argument("--seconds", type=float, default=2.0, help="minimum time per measurement")
    ap.add_argument("--hl7apy-messages", type=int, default=40, help="hl7apy is slow: measure it on this many")
    args = ap.parse_args(argv)

    import hl7
    from hl7apy.parser import parse_message

    raws = []
    for path in sorted((args.corpus / "hl7v2").rglob("*.hl7")):
        try:
            messages = split_batch(path.read_bytes())  # batch files count by their messages
        except HL7Error:
            continue
        for raw in messages:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
            raws.append(re.sub(rb"\r\n|\n", b"\r", raw).rstrip(b"\r\n ") + b"\r")
    common = []
    for raw in raws:
        try:
            text = raw.decode("utf-8")
            parse(raw)
            hl7.parse(text)
            parse_message(text, find_groups=False)
        except Exception:  # noqa: BLE001 - whoever refuses a message drops it from the common set
            continue
        common.append(raw)
    texts = [r.decode("utf-8") for r in common]
    few = max(1, min(args.hl7apy_messages, len(common)))
    mappings = load_mappings()
    convertible = []
    for raw in raws:
        try:
            convert(raw, mappings)
            convertible.append(raw)
        except HL7Error:
            pass

    rows = [
        ("ours: parse_header", _rate(parse_header, common, args.seconds), len(common)),
        ("ours: parse (lazy)", _rate(parse, common, args.seconds), len(common)),
        ("ours: parse + every field", _rate(_full, common, args.seconds), len(common)),
        ("python-hl7: hl7.parse", _rate(hl7.parse, texts, args.seconds), len(common)),
    ]
    # hl7apy on a subset; the ratio below compares it with ours on that same subset.
    apy = _rate(lambda t: parse_message(t, find_groups=False), texts[:few], args.seconds)
    ours_few = _rate(parse, common[:few], args.seconds)
    rows.append((f"hl7apy: parse_message (first {few})", apy, few))
    rows.append(("ours: convert (to FHIR dicts)", _rate(lambda r: convert(r, mappings), convertible, args.seconds),
                 len(convertible)))

    lazy = rows[1][1]
    print(f"{len(raws)} corpus messages (batch files split), {len(common)} accepted by all three parsers, "
          f"{len(convertible)} convertible; >= {args.seconds:g} s per row\n")
    print(f"{'what':38} {'messages':>8} {'msg/s':>12} {'us/msg':>10} {'ours lazy is x faster':>22}")
    for name, rate, count in rows:
        base = ours_few if name.startswith("hl7apy") else lazy
        ratio = f"{base / rate:,.1f}" if not name.startswith("ours") else ""
        print(f"{name:38} {count:>8} {rate:>12,.0f} {1e6 / rate:>10,.1f} {ratio:>22}")


if __name__ == "__main__":
    main()
