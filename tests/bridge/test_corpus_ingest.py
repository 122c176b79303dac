"""Every HL7v2 message of the shared corpus, end to end: nothing crashes, nothing is lost, each is
stored (AA) or kept with a specific reason (AE/AR with an HL7 table 0357 code and a text)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from adapters.files.watcher import messages_of
from bridge.ack import REJECT_CODES
from bridge.hl7.parser import split_batch
from bridge.inbox import content_sha256
from bridge.pipeline import Incoming
from tests.ingest_support import hl7_files, open_pipeline

TABLE_0357 = {"0", "100", "101", "102", "103", "104", "200", "201", "202", "203", "204", "205", "206", "207"}


def test_whole_corpus_ingested_nothing_lost(database_url: str, corpus: Path) -> None:
    files = hl7_files(corpus)
    assert len(files) >= 200, "the corpus went missing"
    items: list[Incoming] = []
    for path in files:
        messages, envelope_error = messages_of(path.read_bytes(), split_batch)
        items += [Incoming(m, f"corpus:{path.relative_to(corpus)}", envelope_error) for m in messages]
    with open_pipeline(database_url) as (pipeline, log):
        outcomes = []
        for at in range(0, len(items), 32):
            outcomes += pipeline.ingest_many(items[at : at + 32])
        distinct = {(o.header.sender if o.header_readable else "", o.header.control_id if o.header_readable else "",
                     content_sha256(i.raw)) for o, i in zip(outcomes, items, strict=True)}
        counts = pipeline.inbox.counts()
        acks = Counter(o.ack_code for o in outcomes)
        reasons = Counter(f"{o.error.code} {o.error.location}" for o in outcomes if o.error)
        print(json.dumps({"files": len(files), "messages_in": len(items), "distinct": len(distinct),
                          "inbox": counts, "acks": acks, "versions": pipeline.store.count()}))
        print("rejection reasons:", json.dumps(reasons.most_common(), indent=None))
        assert sum(counts.values()) == len(distinct), "a message was lost, or kept twice"
        assert counts.get("received", 0) == 0
        for outcome, item in zip(outcomes, items, strict=True):
            assert outcome.committed, item.source
            if outcome.status == "stored":
                assert outcome.ack_code == "AA" and outcome.versions, item.source
            else:
                assert outcome.status == "error", item.source
                assert outcome.error.code in TABLE_0357 and outcome.error.text, item.source
                expected = "AR" if (outcome.error.code in REJECT_CODES or not outcome.header_readable) else "AE"
                assert outcome.ack_code == expected, item.source
        assert counts.get("stored", 0) > 0
        log.sequence()
        assert log.size() == pipeline.store.count()
