"""MLLP framing: frames out of any chunking, garbage and broken frames counted, oversize refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.errors import FramingError
from adapters.mllp.framing import CR, FS, VT, Framer, frame

MESSAGES = st.lists(st.binary(max_size=300).map(lambda b: b.replace(VT, b"").replace(FS, b"")), max_size=8)


@given(MESSAGES, st.lists(st.integers(min_value=1, max_value=50), min_size=1))
def test_frames_survive_any_chunking(messages: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(m) for m in messages)
    framer, out, at, i = Framer(10_000), [], 0, 0
    while at < len(stream):
        size = cuts[i % len(cuts)]
        out += framer.feed(stream[at : at + size])
        at, i = at + size, i + 1
    assert out == messages
    assert framer.discarded == 0 and framer.pending == 0


def test_garbage_before_vt_is_discarded_and_counted() -> None:
    framer = Framer(100)
    assert framer.feed(b"noise\r\n" + frame(b"MSH|a") + b"xx" + frame(b"MSH|b")) == [b"MSH|a", b"MSH|b"]
    assert framer.discarded == len(b"noise\r\n") + 2


def test_fs_without_cr_is_accepted() -> None:
    assert Framer(100).feed(VT + b"MSH|a" + FS + VT + b"MSH|b" + FS + CR) == [b"MSH|a", b"MSH|b"]


def test_cr_after_fs_split_across_reads() -> None:
    framer = Framer(100)
    assert framer.feed(VT + b"MSH|a" + FS) == [b"MSH|a"]
    assert framer.feed(CR + frame(b"MSH|b")) == [b"MSH|b"]
    assert framer.discarded == 0


def test_missing_fs_then_a_new_frame_drops_the_unterminated_one() -> None:
    framer = Framer(100)
    assert framer.feed(VT + b"MSH|lost" + frame(b"MSH|kept")) == [b"MSH|kept"]
    assert framer.discarded == len(b"MSH|lost") + 1


def test_unterminated_frame_is_pending() -> None:
    framer = Framer(100)
    assert framer.feed(VT + b"MSH|half") == []
    assert framer.pending == len(b"MSH|half")


def test_oversize_frame_raises() -> None:
    framer = Framer(10)
    framer.feed(VT + b"123456789")
    with pytest.raises(FramingError, match="larger than 10"):
        framer.feed(b"0123")
