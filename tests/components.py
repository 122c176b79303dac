"""Finding and starting the real components tests use (PostgreSQL, Go, anvil, ...).

A component that is absent skips its tests with the reason on a developer's machine; under CI
(``CI`` set, as `.ci/run` does) an absent component fails the test instead, so nothing is
silently skipped there.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket

import pytest


def missing(component: str, hint: str) -> None:
    message = f"{component} is not available: {hint}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must install it: see .ci/run)", pytrace=False)
    pytest.skip(message)


def find_executable(name: str, extra_globs: tuple[str, ...] = ()) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for pattern in extra_globs:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[-1]
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
