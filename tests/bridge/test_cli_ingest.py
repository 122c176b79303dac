"""`fhir-bridge ingest` and `fhir-bridge messages` (list, show, reprocess), run in-process."""

from __future__ import annotations

import json
from pathlib import Path

from bridge.cli import main


def run(capsys, *args: str) -> tuple[int, list[dict]]:
    code = main(list(args))
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.strip()]


def test_ingest_list_show_reprocess(capsys, database_url: str, corpus: Path, tmp_path: Path) -> None:
    base = ["--data-dir", str(tmp_path / "data"), "--database-url", database_url]
    good = corpus / "hl7v2/microsoft-FHIR-Converter/ADT-A01-02.hl7"
    batch = corpus / "hl7v2/python-hl7/sample_batch1.hl7"
    garbage = tmp_path / "garbage.hl7"
    garbage.write_bytes(b"not HL7 at all")

    code, lines = run(capsys, *base, "ingest", str(good), str(batch), str(garbage))
    assert code == 1  # some message was not stored
    assert lines[0]["status"] == "stored" and lines[0]["ack_code"] == "AA" and lines[0]["control_id"]
    assert lines[-1]["status"] == "error" and lines[-1]["ack_code"] == "AR" and lines[-1]["error"]["code"] == "100"
    assert {"id", "control_id", "status", "ack_code", "error"} <= set(lines[0])

    code, again = run(capsys, *base, "ingest", str(good))
    assert code == 0 and again[0]["duplicate"] and again[0]["id"] == lines[0]["id"]

    code, listed = run(capsys, *base, "messages", "list")
    assert code == 0 and len(listed) == len(lines)
    code, errors = run(capsys, *base, "messages", "list", "--status", "error")
    assert lines[-1]["id"] in [m["id"] for m in errors] and all(m["status"] == "error" for m in errors)

    code, [shown] = run(capsys, *base, "messages", "show", str(lines[0]["id"]))
    assert shown["raw"].startswith("MSH") and shown["versions"] == lines[0]["versions"]
    assert "salt" not in json.dumps(shown)

    code, redone = run(capsys, *base, "messages", "reprocess", "--all-failed")
    assert code == 1 and {r["id"] for r in redone} == {m["id"] for m in errors}
    code, [one] = run(capsys, *base, "messages", "reprocess", str(lines[0]["id"]))
    assert code == 0 and one["versions"] == lines[0]["versions"]

    assert main([*base, "messages", "show", "99999"]) == 2
    assert "messages list" in capsys.readouterr().err
