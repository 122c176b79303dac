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
from pathlib import Path

from adapters.errors import FramingError, ListenerError

from .framing import Framer, frame
from .ingestor import Ingestor

log = logging.getLogger("fhir_bridge.mllp")

READ_SIZE = 65536


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
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port, ssl=self.ssl_context,
                                                      limit=READ_SIZE, backlog=512)
        except OSError as exc:
            raise ListenerError(f"cannot listen for MLLP on {self.host}:{self.port}: {exc.strerror}; "
                                "choose another mllp_port or stop what uses it") from exc
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        source = f"mllp:{peer[0]}:{peer[1]}"
        framer = Framer(self.max_frame)
        loop = asyncio.get_running_loop()
        self.connections += 1
        try:
            while True:
                async with asyncio.timeout(self.idle_timeout):  # a timer, where wait_for would add a task per read
                    data = await reader.read(READ_SIZE)
                if not data:
                    break
                for raw in framer.feed(data):
                    outcome = await self.ingestor.submit_to_loop(raw, source, loop)
                    for _, message in outcome.acknowledgements():
                        writer.write(frame(message))
                    await writer.drain()
                if framer.discarded > self.max_frame:
                    raise FramingError(f"{framer.discarded} bytes outside MLLP frames")
        except FramingError as exc:
            log.warning("%s: %s; closing the connection", source, exc)
        except (ConnectionError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.info("%s: connection ended (%s)", source, type(exc).__name__)
        except Exception:
            log.exception("%s: unexpected error; closing the connection", source)
        finally:
            self.connections -= 1
            if framer.pending:
                log.warning("%s: closed inside a frame; %d unacknowledged bytes not kept (the sender resends)",
                            source, framer.pending)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)


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
