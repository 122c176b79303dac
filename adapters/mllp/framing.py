"""MLLP framing (HL7 MLLP release 1): ``<VT> message <FS><CR>``.  Pure: bytes in, frames out.

Tolerated, because senders do it: bytes before ``<VT>`` (line noise, keep-alives) are discarded
and counted; ``<FS>`` not followed by ``<CR>``.  A ``<VT>`` inside a frame starts a new frame (the
unterminated one is discarded and counted: its sender got no ACK and resends).  A frame longer
than ``max_size`` raises :class:`FramingError`, after which the connection must be closed.
"""

from __future__ import annotations

from adapters.errors import FramingError

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"


def frame(message: bytes) -> bytes:
    return VT + message + FS + CR


class Framer:
    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.discarded = 0  # garbage bytes outside frames, and unterminated frames
        self._buffer = bytearray()
        self._inside = False
        self._skip_cr = False

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame."""
        return len(self._buffer) if self._inside else 0

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        at, n = 0, len(data)
        while at < n:
            if self._skip_cr:
                self._skip_cr = False
                if data[at] == 0x0D:
                    at += 1
                    continue
            if not self._inside:
                start = data.find(VT, at)
                if start < 0:
                    self.discarded += n - at
                    break
                self.discarded += start - at
                self._inside, self._buffer = True, bytearray()
                at = start + 1
                continue
            end = data.find(FS, at)
            restart = data.find(VT, at, end if end >= 0 else n)
            if restart >= 0:  # a new frame begins before this one ended
                self.discarded += len(self._buffer) + (restart - at) + 1
                self._buffer = bytearray()
                at = restart + 1
                continue
            stop = n if end < 0 else end
            if len(self._buffer) + (stop - at) > self.max_size:
                raise FramingError(f"frame larger than {self.max_size} bytes")
            self._buffer += data[at:stop]
            if end < 0:
                break
            frames.append(bytes(self._buffer))
            self._buffer, self._inside, self._skip_cr = bytearray(), False, True
            at = end + 1
        return frames
