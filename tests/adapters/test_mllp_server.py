"""The MLLP listener driven by a real client (python-hl7's `mllp_send`) over 127.0.0.1."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from adapters.mllp.ingestor import Ingestor
from adapters.mllp.server import MllpServer, MllpThread, tls_context
from tests.ingest_support import CR, FS, VT, acks_from, exchange, mllp_file, variants

SENDERS, PER_SENDER = 6, 20


@pytest.fixture
def adt(corpus: Path) -> bytes:
    return (corpus / "hl7v2/microsoft-FHIR-Converter/ADT-A01-02.hl7").read_bytes()


def send_all(mllp_send: str, port: int, files: list[Path]) -> list[bytes]:
    procs = [subprocess.Popen([mllp_send, "-p", str(port), "-f", str(f), "127.0.0.1"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for f in files]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        outputs.append(out)
    return outputs


def test_many_concurrent_senders_every_message_acknowledged_and_stored(
    mllp_send: str, mllp_server: MllpServer, pipeline, adt: bytes, tmp_path: Path
) -> None:
    files, expected = [], []
    for s in range(SENDERS):
        messages = variants(adt, PER_SENDER, f"S{s}")
        files.append(mllp_file(tmp_path / f"sender{s}.mllp", messages))
        expected.append([f"S{s}-{i}" for i in range(PER_SENDER)])
    outputs = send_all(mllp_send, mllp_server.port, files)
    for out, controls in zip(outputs, expected, strict=True):
        assert acks_from(out) == [("AA", c) for c in controls]  # one AA per message, in order, MSA-2 = MSH-10
    counts = pipeline.inbox.counts()
    assert counts == {"stored": SENDERS * PER_SENDER}
    first = pipeline.inbox.list(limit=1)[0]
    assert any(v.startswith("Patient/") for v in first.versions) and any(v.startswith("Provenance/") for v in first.versions)

    # The same messages again: the same answers, no new message row, no new version.
    versions = pipeline.store.count()
    outputs = send_all(mllp_send, mllp_server.port, files[:2])
    assert [a for out in outputs for a in acks_from(out)] == [("AA", c) for cs in expected[:2] for c in cs]
    assert pipeline.inbox.counts() == {"stored": SENDERS * PER_SENDER}
    assert pipeline.store.count() == versions


def test_unmappable_and_garbage_frames_are_kept_and_answered(mllp_server: MllpServer, pipeline, adt: bytes) -> None:
    broken = adt.replace(b"ADT^A01", b"ZZZ^Z99", 1)
    answer = exchange(mllp_server.port, b"line noise" + VT + broken + FS + CR + VT + b"\x00\xffnot hl7" + FS + CR)
    acks = acks_from(answer)
    assert [code for code, _ in acks] == ["AR", "AR"]
    assert b"ERR|" in answer and b"HL70357" in answer
    assert pipeline.inbox.counts() == {"error": 2}  # nothing received is dropped


def test_enhanced_mode_accept_then_application_ack(mllp_server: MllpServer, adt: bytes) -> None:
    [message] = variants(adt, 1, "ENH")
    lines = message.split(b"\r")
    msh = lines[0].split(b"|")
    msh += [b""] * (17 - len(msh))
    msh[14], msh[15] = b"AL", b"AL"
    enhanced = b"\r".join([b"|".join(msh), *lines[1:]])
    assert acks_from(exchange(mllp_server.port, VT + enhanced + FS + CR)) == [("CA", "ENH-0"), ("AA", "ENH-0")]
    msh[14], msh[15] = b"NE", b"ER"  # accept: never; application: only on error -> nothing at all
    quiet = b"\r".join([b"|".join(msh).replace(b"ENH-0", b"ENH-1"), *lines[1:]])
    assert exchange(mllp_server.port, VT + quiet + FS + CR) == b""


def test_oversize_frame_closes_the_connection_and_the_server_goes_on(mllp_server: MllpServer, adt: bytes) -> None:
    huge = VT + b"MSH|^~\\&|" + b"X" * (mllp_server.max_frame + 10) + FS + CR
    try:
        assert exchange(mllp_server.port, huge) == b""
    except ConnectionResetError:
        pass  # closed while we were still sending: also a clean close
    [message] = variants(adt, 1, "AFTER")
    assert acks_from(exchange(mllp_server.port, VT + message + FS + CR)) == [("AA", "AFTER-0")]


def test_unterminated_frame_gets_no_ack_and_is_not_kept(mllp_server: MllpServer, pipeline, adt: bytes) -> None:
    assert exchange(mllp_server.port, VT + adt) == b""
    assert pipeline.inbox.counts() == {}


def test_an_idle_connection_is_closed_after_the_timeout_and_a_busy_one_is_not(pipeline, adt: bytes) -> None:
    import time

    ingestor = Ingestor(pipeline.ingest_many).start()
    thread = MllpThread(MllpServer(ingestor, "127.0.0.1", 0, idle_timeout=0.5)).start()
    try:
        port = thread.server.port
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
            start = time.monotonic()
            assert idle.recv(1024) == b""  # closed by the server, not by our 10 s timeout
            assert 0.4 < time.monotonic() - start < 5
        with socket.create_connection(("127.0.0.1", port), timeout=10) as busy:
            for i, message in enumerate(variants(adt, 3, "IDLE")):  # each within the timeout of the last
                time.sleep(0.3)
                busy.sendall(VT + message + FS + CR)
                answer = b""
                while not answer.endswith(FS + CR):
                    answer += busy.recv(65536)
                assert acks_from(answer) == [("AA", f"IDLE-{i}")]
    finally:
        thread.stop()
        ingestor.stop()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "mllp.crt", tmp_path / "mllp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_tls(pipeline, adt: bytes, tmp_path: Path) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    ingestor = Ingestor(pipeline.ingest_many).start()
    thread = MllpThread(MllpServer(ingestor, "127.0.0.1", 0, tls_context(cert_file, key_file))).start()
    try:
        client = ssl.create_default_context(cafile=str(cert_file))
        [message] = variants(adt, 1, "TLS")
        with socket.create_connection(("127.0.0.1", thread.server.port), timeout=10) as raw_sock:
            with client.wrap_socket(raw_sock, server_hostname="127.0.0.1") as sock:
                sock.sendall(VT + message + FS + CR)
                answer = b""
                while FS not in answer:
                    answer += sock.recv(65536)
        assert acks_from(answer) == [("AA", "TLS-0")]
        try:  # a plain-text client on the TLS port gets no ACK, only a closed connection
            assert acks_from(exchange(thread.server.port, VT + message + FS + CR)) == []
        except ConnectionResetError:
            pass
    finally:
        thread.stop()
        ingestor.stop()


def test_unreadable_tls_files_say_what_to_do(tmp_path: Path) -> None:
    from adapters.errors import ListenerError

    with pytest.raises(ListenerError, match="mllp_tls_cert"):
        tls_context(tmp_path / "none.crt", tmp_path / "none.key")


def test_frames_sent_ahead_are_answered_in_order_even_past_the_reading_pause(mllp_server: MllpServer, adt: bytes) -> None:
    """A sender that does not wait for its ACKs: every frame answered, in order, one at a time
    (more frames than the listener buffers before it stops reading)."""
    from adapters.mllp.server import MAX_WAITING

    messages = variants(adt, 2 * MAX_WAITING + 20, "AHEAD")
    answers = acks_from(exchange(mllp_server.port, b"".join(VT + m + FS + CR for m in messages), timeout=60))
    assert answers == [("AA", f"AHEAD-{i}") for i in range(len(messages))]


def test_a_sender_that_sends_and_never_reads_gets_its_answers_buffered_then_the_close(pipeline, adt: bytes) -> None:
    """Frames sent without reading a single ACK: the listener answers what it read, then, idle,
    closes the connection; nothing hangs."""
    import time

    ingestor = Ingestor(pipeline.ingest_many).start()
    thread = MllpThread(MllpServer(ingestor, "127.0.0.1", 0, idle_timeout=1.0)).start()
    try:
        [message] = variants(adt, 1, "NOREAD")
        frame_bytes = VT + message + FS + CR  # the same message again: kept once, answered each time
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        with sock:
            sock.connect(("127.0.0.1", thread.server.port))
            sock.settimeout(0.5)
            sent = 0
            try:
                # a few hundred: each is ingested (a group commit and its fsync) before the next, so
                # thousands took CI 40 s; the stalled-writer case is the stub test below
                for _ in range(300):
                    sock.sendall(frame_bytes)
                    sent += 1
            except TimeoutError:
                pass
            sock.settimeout(30)
            start = time.monotonic()
            received = b""
            while chunk := sock.recv(65536):  # what was answered, then the close
                received += chunk
            assert time.monotonic() - start < 20
        answers = acks_from(received)
        assert 0 < len(answers) <= sent + 1 and set(answers) == {("AA", "NOREAD-0")}
        assert pipeline.inbox.counts() == {"stored": 1}
    finally:
        thread.stop()
        ingestor.stop()


class _StubTransport:
    """Stands in for a socket whose peer never reads: that cannot be produced quickly for real (the
    kernel holds megabytes of ACKs before the listener's transport pauses writing)."""

    def __init__(self) -> None:
        self.closed = False
        self.paused_reading = False

    def get_extra_info(self, name: str, default=None):  # type: ignore[no-untyped-def]
        return ("127.0.0.1", 1) if name == "peername" else default

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused_reading = True

    def resume_reading(self) -> None:
        self.paused_reading = False

    def write(self, data: bytes) -> None:
        pass


def test_idle_means_nothing_received_answered_or_in_hand_and_counts_frames_that_cannot_be_answered() -> None:
    import asyncio

    from adapters.mllp.server import _Connection

    class Waiting:  # an ingestor that takes frames and never answers (answers come in the test)
        def __init__(self) -> None:
            self.futures: list[asyncio.Future] = []

        def submit_to_loop(self, raw, source, loop):  # type: ignore[no-untyped-def]
            self.futures.append(loop.create_future())
            return self.futures[-1]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ingestor = Waiting()
        server = MllpServer(ingestor, idle_timeout=0.2)  # type: ignore[arg-type]
        busy, stuck = _Connection(server, loop), _Connection(server, loop)
        busy.connection_made(_StubTransport())  # type: ignore[arg-type]
        stuck.connection_made(_StubTransport())  # type: ignore[arg-type]
        busy.data_received(VT + b"MSH|^~\\&|A" + FS + CR)  # in hand for longer than the timeout: not idle
        stuck.pause_writing()  # its peer stopped reading ACKs
        stuck.data_received((VT + b"MSH|^~\\&|B" + FS + CR) * 3)  # so these wait, unanswered
        assert len(ingestor.futures) == 1 and len(stuck.waiting) == 3
        await asyncio.sleep(0.6)
        assert not busy.transport.closed and stuck.transport.closed  # type: ignore[union-attr]
        busy.connection_lost(None)
        stuck.connection_lost(None)
        assert server.connections == 0

    asyncio.run(scenario())




def test_after_a_framing_error_no_waiting_frame_is_handed_over() -> None:
    """The connection is closing: frames that came before the bad bytes but wait their turn are not
    ingested (their sender got no ACK and resends), and the one in hand gets no ACK either."""
    import asyncio

    from adapters.mllp.server import _Connection

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        submitted: list[asyncio.Future] = []

        class Waiting:
            def submit_to_loop(self, raw, source, loop):  # type: ignore[no-untyped-def]
                submitted.append(loop.create_future())
                return submitted[-1]

        server = MllpServer(Waiting(), max_frame=64)  # type: ignore[arg-type]
        connection = _Connection(server, loop)
        transport = _StubTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received((VT + b"MSH|^~\\\\&|A" + FS + CR) * 3)  # one in hand, two waiting
        connection.data_received(VT + b"X" * 100 + FS + CR)  # larger than max_frame
        assert transport.closed and len(submitted) == 1
        class Outcome:
            def acknowledgements(self) -> list:
                return [("AA", b"MSH|^~\\&|ACK")]

        submitted[0].set_result(Outcome())  # its outcome comes after the close was asked
        await asyncio.sleep(0)
        assert len(submitted) == 1
        connection.connection_lost(None)
        assert server.connections == 0

    asyncio.run(scenario())
