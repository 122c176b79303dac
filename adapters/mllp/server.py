"""The MLLP listener: many concurrent connections on one asyncio loop, optional TLS.

Each connection is read into a :class:`Framer`; every complete frame is handed to the
:class:`Ingestor` and answered, in order, with the acknowledgements its MSH-15/MSH-16 ask for.  A
broken stream (oversize frame, endless garbage, idle timeout, TLS failure) closes that connection
and nothing else; no input can stop the listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections import deque
from pathlib import Path

from adapters.errors import FramingError, ListenerError

from .framing import Framer, frame
from .ingestor import Ingestor

log = logging.getLogger("fhir_bridge.mllp")

MAX_WAITING = 64  # frames received ahead of their turn before reading pauses


def tls_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ListenerError(
            f"cannot load the MLLP TLS certificate {cert_file} and key {key_file}: {exc}; "
            "check mllp_tls_cert and mllp_tls_key (PEM files)"
        ) from exc
    return context


class MllpServer:
    def __init__(
        self, ingestor: Ingestor, host: str = "127.0.0.1", port: int = 2575, ssl_context: ssl.SSLContext | None = None,
        max_frame: int = 16 * 1024 * 1024, idle_timeout: float = 600.0,
    ) -> None:
        self.ingestor, self.host, self.port = ingestor, host, port
        self.ssl_context, self.max_frame, self.idle_timeout = ssl_context, max_frame, idle_timeout
        self._server: asyncio.AbstractServer | None = None
        self.connections = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _Connection(self, loop), self.host, self.port,
                                                    ssl=self.ssl_context, backlog=512)
        except OSError as exc:
            raise ListenerError(f"cannot listen for MLLP on {self.host}:{self.port}: {exc.strerror}; "
                                "choose another mllp_port or stop what uses it") from exc
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)


class _Connection(asyncio.Protocol):
    """One MLLP connection: frames are ingested one at a time, in order, each answered before the
    next is handed over (as the sender expects; a sender that sends ahead waits in our buffer).

    A protocol rather than a stream reader and writer, because the listener shares the process with
    the writer: callbacks cost less than a coroutine's reads, timeouts and drains per message (0.1 ms
    of CPU a message before).  Frames are handed over only while the sender reads its
    acknowledgements, and reading pauses while more than :data:`MAX_WAITING` frames wait; a
    connection with nothing received, answered or in hand for ``idle_timeout`` seconds is closed."""

    def __init__(self, server: MllpServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server, self.loop = server, loop
        self.framer = Framer(server.max_frame)
        self.waiting: deque[bytes] = deque()
        self.transport: asyncio.Transport | None = None
        self.source = "mllp:?:0"
        self.in_hand = False  # a frame is being ingested; its answer comes next
        self.write_paused = self.read_paused = self.ended = False
        self.closing = self.closed = False  # closing: asked to close; closed: the connection is gone
        self.last_heard = loop.time()
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.source = f"mllp:{peer[0]}:{peer[1]}"
        self.server.connections += 1
        self.idle = self.loop.call_later(self.server.idle_timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self.last_heard = self.loop.time()
        try:
            self.waiting.extend(self.framer.feed(data))
            if self.framer.discarded > self.server.max_frame:
                raise FramingError(f"{self.framer.discarded} bytes outside MLLP frames")
        except FramingError as exc:
            log.warning("%s: %s; closing the connection", self.source, exc)
            self._close()
            return
        if len(self.waiting) > MAX_WAITING and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._hand_over()

    def eof_received(self) -> bool:
        """The sender has sent all it will (a half-close): answer what came, then close.  (TLS has
        no half-close: its transport closes whatever this answers.)"""
        self.ended = True
        self._hand_over()
        return self.transport is not None and self.transport.get_extra_info("sslcontext") is None

    def _hand_over(self) -> None:
        """The next waiting frame to the ingestor, unless one is in hand or the sender is not reading;
        once the sender has ended and all is answered, the close."""
        if self.in_hand or self.write_paused or self.closing:
            return
        if not self.waiting:
            if self.ended:
                self._close()
            return
        self.in_hand = True
        future = self.server.ingestor.submit_to_loop(self.waiting.popleft(), self.source, self.loop)
        future.add_done_callback(self._answer)
        if self.read_paused and len(self.waiting) <= MAX_WAITING // 2:
            self.read_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def _answer(self, future: asyncio.Future) -> None:
        self.in_hand = False
        if self.closing or self.closed or future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.error("%s: ingest failed (%s: %s); closing the connection", self.source, type(error).__name__, error)
            self._close()
            return
        try:
            for _, message in future.result().acknowledgements():
                self.transport.write(frame(message))  # type: ignore[union-attr]
        except Exception:
            log.exception("%s: unexpected error; closing the connection", self.source)
            self._close()
            return
        self.last_heard = self.loop.time()
        self._hand_over()

    def pause_writing(self) -> None:  # the sender is not reading its acknowledgements: stop answering
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._hand_over()

    def _check_idle(self) -> None:
        if self.closing:
            return
        quiet = self.loop.time() - self.last_heard
        # idle: nothing received or answered for the timeout, and nothing in hand; frames waiting
        # only count while their answers can be written (a sender that never reads is idle too)
        if quiet >= self.server.idle_timeout and not self.in_hand and (not self.waiting or self.write_paused):
            log.info("%s: connection ended (idle for %.0f s)", self.source, quiet)
            self._close()
            return
        self.idle = self.loop.call_later(max(self.server.idle_timeout - quiet, 0.05), self._check_idle)

    def _close(self) -> None:
        """Close (once the answers written so far are sent); no further frame is handed over."""
        if not self.closing and self.transport is not None:
            self.closing = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed or self.transport is None:  # (no connection_made: a TLS handshake failed)
            return
        self.closed = self.closing = True
        self.server.connections -= 1
        if self.idle is not None:
            self.idle.cancel()
        if exc is not None:
            log.info("%s: connection ended (%s)", self.source, type(exc).__name__)
        if self.framer.pending:
            log.warning("%s: closed inside a frame; %d unacknowledged bytes not kept (the sender resends)",
                        self.source, self.framer.pending)
        if self.waiting:
            log.warning("%s: closed with %d frame(s) not yet ingested and not acknowledged (the sender resends)",
                        self.source, len(self.waiting))
            self.waiting.clear()


class MllpThread:
    """Runs an :class:`MllpServer` on its own event loop in a background thread (for `serve`)."""

    def __init__(self, server: MllpServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mllp", daemon=True)

    def start(self) -> MllpThread:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        self._loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
