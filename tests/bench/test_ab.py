"""bench/ab.py: two versions of a project, one benchmark, taking turns (a real git repository in a
temporary folder, real exports and real runs of a small benchmark script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import ab  # noqa: E402  (bench/ is scripts, not a package)

# The benchmark: its rate is written in the file, so each version reports its own; it also says
# which run of that tree this is, to show the two sides take turns.
_SCRIPT = """
import json, pathlib, sys
counter = pathlib.Path(__file__).resolve().parents[1] / "runs"
runs = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(runs))
print("warming up")
print(json.dumps({"rate": RATE, "cpu": {"ms": MS}, "runs": runs, "args": sys.argv[1:]}))
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@example.org",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "bench").mkdir(parents=True)
    _git(root, "init", "-q")
    (root / "bench" / "fake.py").write_text(_SCRIPT.replace("RATE", "400").replace("MS", "2.0"))
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    (root / "bench" / "fake.py").write_text(_SCRIPT.replace("RATE", "500").replace("MS", "1.5"))
    _git(root, "commit", "-q", "-am", "new")
    return root


def test_each_side_runs_its_own_version_and_the_ratios_are_new_over_base(repo: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ab.json"
    code = ab.main(["HEAD~1", "HEAD", "--pairs", "3", "--metric", "rate", "--metric", "cpu.ms", "--json", str(out),
                    "--", "bench/fake.py", "--messages", "10"], root=repo)
    assert code == 0
    result = json.loads(out.read_text())
    assert result["metrics"]["rate"] == {"base": [400, 400], "new": [500, 500],
                                         "ratio": {"min": 1.25, "max": 1.25, "median": 1.25}}
    assert result["metrics"]["cpu.ms"]["ratio"]["median"] == 0.75
    # three runs of each tree, its arguments passed on; the order swapped every pair
    assert [r["base"]["runs"] for r in result["reports"]] == [1, 2, 3]
    assert all(r["new"]["args"] == ["--messages", "10"] for r in result["reports"])
    assert [list(r) for r in result["reports"]] == [["base", "new"], ["new", "base"], ["base", "new"]]
    printed = capsys.readouterr()
    assert "rate: HEAD~1 400-400, HEAD 500-500; ratio 1.25-1.25x, median 1.25x" in printed.out
    assert "pair 2/3 (new then base)" in printed.err


def test_the_work_tree_with_its_uncommitted_changes_is_a_version(repo: Path, tmp_path: Path) -> None:
    (repo / "bench" / "fake.py").write_text(_SCRIPT.replace("RATE", "800").replace("MS", "1.0"))
    out = tmp_path / "ab.json"
    ab.main(["HEAD", ab.WORKTREE, "--pairs", "1", "--metric", "rate", "--json", str(out), "--", "bench/fake.py"],
            root=repo)
    assert json.loads(out.read_text())["metrics"]["rate"]["ratio"]["median"] == 1.6


def test_a_revision_git_does_not_know_says_what_to_give(repo: Path) -> None:
    with pytest.raises(SystemExit, match="give a commit, tag or branch"):
        ab.main(["no-such-rev", "HEAD", "--", "bench/fake.py"], root=repo)


def test_a_metric_the_report_lacks_is_named() -> None:
    with pytest.raises(KeyError, match="cpu.workers: the benchmark's report has no 'workers'"):
        ab.dig({"cpu": {"main": 1.0}}, "cpu.workers")
    with pytest.raises(KeyError, match="is not a number"):
        ab.dig({"ok": True}, "ok")


def test_the_last_json_object_printed_is_the_report() -> None:
    text = 'starting {not json}\n{"a": 1}\nnoise\n{"b": {"c": 2}}\n'
    assert ab.last_json_object(text) == {"b": {"c": 2}}
    with pytest.raises(ValueError, match="no JSON object"):
        ab.last_json_object("[1, 2]\nplain text\n")


def test_a_metric_missing_from_the_report_stops_with_what_to_do(repo: Path) -> None:
    with pytest.raises(SystemExit, match="rate.median: .*name a number the report holds with --metric"):
        ab.main(["HEAD~1", "HEAD", "--pairs", "1", "--metric", "rate.median", "--", "bench/fake.py"], root=repo)
