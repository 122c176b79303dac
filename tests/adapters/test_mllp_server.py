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
