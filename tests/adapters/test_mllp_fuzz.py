"""Fuzzed MLLP input (Hypothesis): truncated frames, random bytes, huge fields, wrong encodings.

The server never crashes: every connection gets well-formed acknowledgements or a clean close, and
the listener answers a valid message afterwards.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.mllp.ingestor import Ingestor
from adapters.mllp.server import MllpServer, MllpThread
from tests.ingest_support import CR, FS, VT, acks_from, exchange, open_pipeline, variants

MAX_FRAME = 64 * 1024
TEMPLATE = Path(__file__).resolve().parents[2].parent / "shared/corpus/hl7v2/microsoft-FHIR-Converter/ADT-A01-02.hl7"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'bridge.db'}"
    with open_pipeline(url) as (pipeline, _):
        ingestor = Ingestor(pipeline.ingest_many).start()
        thread = MllpThread(MllpServer(ingestor, "127.0.0.1", 0, max_frame=MAX_FRAME, idle_timeout=5)).start()
        yield thread.server, pipeline
        thread.stop()
        ingestor.stop()


def _message() -> bytes:
    return variants(TEMPLATE.read_bytes(), 1, "FUZZ")[0]


@st.composite
def payloads(draw) -> bytes:
    message = _message()
    kind = draw(st.sampled_from(["random", "truncated", "huge", "encoding", "mutated", "frames"]))
    if kind == "random":
        return draw(st.binary(max_size=2000))
    if kind == "truncated":
        framed = VT + message + FS + CR
        return framed[: draw(st.integers(0, len(framed)))]
    if kind == "huge":
        size = draw(st.sampled_from([1000, 30_000, MAX_FRAME - 500, MAX_FRAME + 1]))
        return VT + message.replace(b"PID|", b"PID|" + b"A" * size + b"|", 1) + FS + CR
    if kind == "encoding":
        codec = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp500"]))
        text = message.decode("latin-1").replace("PID|", "PID|ÄÖÜ€漢字|", 1)
        return VT + text.encode(codec, errors="replace") + FS + CR
    if kind == "mutated":
        data = bytearray(message)
        for _ in range(draw(st.integers(1, 20))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        return VT + bytes(data) + FS + CR
    parts = draw(st.lists(st.sampled_from([VT, FS, CR, b"MSH|^~\\&|", b"|", message[:40], b"\x00"]), max_size=30))
    return b"".join(parts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads())
def test_fuzzed_input_gets_an_answer_or_a_clean_close(server, payload: bytes) -> None:
    mllp, pipeline = server
    try:
        answer = exchange(mllp.port, payload, timeout=20)
    except ConnectionResetError:
        answer = b""  # the server closed while we still sent (oversize): a clean close
    chunks = answer.split(FS + CR)
    assert chunks[-1] == b"", "an ACK frame was cut short"
    for chunk in chunks[:-1]:
        assert chunk.startswith(VT) and b"\rMSA" in chunk, chunk[:200]
    for code, _ in acks_from(answer):
        assert code in {"AA", "AE", "AR", "CA", "CE", "CR"}


def test_the_server_still_answers_after_the_fuzzing(server) -> None:
    mllp, pipeline = server
    with socket.create_connection(("127.0.0.1", mllp.port), timeout=10):
        pass
    message = variants(TEMPLATE.read_bytes(), 1, "ALIVE")[0]
    assert acks_from(exchange(mllp.port, VT + message + FS + CR)) == [("AA", "ALIVE-0")]
