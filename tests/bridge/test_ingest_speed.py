"""The ingest fast paths give exactly what the general ones give (issue 3: ingest CPU)."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.hl7.types import MessageHeader
from bridge.provenance import build_provenance, canonical_provenance
from bridge.store import TIME_MARK, VERSION_MARK, canonical_resource


def header(application: str = "APP", facility: str = "FAC", message_type: str = "ADT^A01",
           control_id: str = "C1") -> MessageHeader:
    return MessageHeader("|", "^~\\&", application, facility, "", "", message_type, "", control_id, "P", "2.5",
                         None, None, None)


# Text that takes canonical()'s other ways: escapes, non-BMP (JCS's UTF-16 order), what looks like a
# number with an exponent or a trailing ".0" after ':' or ',', the version-meta placeholders.
TRICKY = ["", 'a"b\\c', "tab\tnew\nline\x01\x1f\x7f", "é ü 中文", "\U0001f600 emoji", ':1e5,', ",1.0]", "[12345678901234567]",
          VERSION_MARK, TIME_MARK, "\x00", "unknown sender"]


def general(digest: str, h: MessageHeader, received_at: str, refs: list[str]):
    return canonical_resource(build_provenance(digest, h, received_at, refs))


@pytest.mark.parametrize("text", TRICKY)
def test_canonical_provenance_is_the_general_canonical_resource(text: str) -> None:
    refs = ["Patient/1/_history/1", f"Observation/{text}/_history/2"]
    for h in (header(application=text), header(facility=text), header(message_type=text), header(control_id=text),
              header(application="", facility="")):
        for received_at in ("2026-01-02T03:04:05.006Z", text):
            assert canonical_provenance("ab" * 32, h, received_at, refs) == general("ab" * 32, h, received_at, refs)
    assert canonical_provenance(text, header(), "t", refs) == general(text, header(), "t", refs)


def test_canonical_provenance_with_a_placeholder_falls_back_to_the_full_resource() -> None:
    for mark in (VERSION_MARK, TIME_MARK):  # a whole string equal to a placeholder
        found = canonical_provenance("ab" * 32, header(), mark, ["Patient/1/_history/1"])
        assert found.template is None and found.resource is not None  # canonicalised in full when stored
        assert found == general("ab" * 32, header(), mark, ["Patient/1/_history/1"])


def test_canonical_provenance_refuses_a_lone_surrogate_like_canonical() -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        general("ab" * 32, header(control_id="\ud800"), "t", ["Patient/1/_history/1"])
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_provenance("ab" * 32, header(control_id="\ud800"), "t", ["Patient/1/_history/1"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=5, max_size=5), st.lists(st.text(max_size=20), min_size=1, max_size=4))
@example(["", "", "", "", ""], [""])
def test_canonical_provenance_agrees_on_any_text(texts: list[str], refs: list[str]) -> None:
    application, facility, message_type, control_id, received_at = texts
    h = header(application, facility, message_type, control_id)
    try:
        expected = general("0f" * 32, h, received_at, refs)
    except rfc8785.CanonicalizationError:  # a lone surrogate: refused both ways
        with pytest.raises(rfc8785.CanonicalizationError):
            canonical_provenance("0f" * 32, h, received_at, refs)
        return
    assert canonical_provenance("0f" * 32, h, received_at, refs) == expected


def test_canonical_provenance_reads_search_parameters_once_provenance_has_some(monkeypatch) -> None:
    from bridge import search_index

    refs = ["Patient/1/_history/1"]
    monkeypatch.setitem(search_index.PARAMETERS, "Provenance", {"agent": ("string", ["agent.who.display"])})
    monkeypatch.setattr(search_index, "_COMPILED", {})
    found = canonical_provenance("ab" * 32, header(), "t", refs)
    assert found.tokens == (("agent", "app|fac"),) and found == general("ab" * 32, header(), "t", refs)
