"""bench/proc_cpu: CPU per thread of this process, read from /proc."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from proc_cpu import thread_cpu_seconds  # noqa: E402  (bench/ is scripts, not a package)


def test_each_thread_is_charged_its_own_cpu() -> None:
    done = threading.Event()
    counted: dict[str, float] = {}

    def burn() -> None:
        start = time.thread_time()
        while time.thread_time() - start < 0.3:  # 0.3 s of this thread's own CPU
            sum(range(1000))
        counted.update(thread_cpu_seconds())
        done.set()

    sleeper = threading.Thread(target=lambda: done.wait(10), name="test-sleeper")
    burner = threading.Thread(target=burn, name="test-burner")
    sleeper.start()
    burner.start()
    burner.join(10)
    sleeper.join(10)
    assert counted["test-burner"] >= 0.25  # /proc counts in ticks of 10 ms
    assert counted["test-sleeper"] <= 0.05
