"""The collector settings of the long-lived ingest processes (in a child process: pytest's own
collector settings must not change)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import gc, json
from bridge.convert import load_mappings
from bridge.heap import YOUNG_THRESHOLD, settle_heap
mappings = load_mappings(None)  # what start-up makes and keeps
before = (gc.get_threshold()[0], gc.get_freeze_count())
settle_heap()
after = (gc.get_threshold()[0], gc.get_freeze_count())
print(json.dumps({"before": before, "after": after, "young": YOUNG_THRESHOLD}))
"""


def test_settle_heap_freezes_start_up_and_raises_the_young_threshold() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found["before"][0] == 700 and found["before"][1] == 0
    assert found["after"][0] == found["young"] == 10_000
    # everything start-up made is out of the collector's sight: tens of thousands of objects
    assert found["after"][1] > 10_000

