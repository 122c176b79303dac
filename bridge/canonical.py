"""RFC 8785 (JCS) canonical JSON, quickly, for the values the bridge stores.

Every stored version and every log leaf is canonicalised, often a dozen per HL7v2 message, so the
cost matters: ``rfc8785.dumps`` walks the value in Python (about 0.1 ms a resource).  For JSON data
``orjson`` with sorted keys (compiled; 2.8 against the C encoder of :mod:`json`'s 13 microseconds
for a converted resource) writes the same bytes as JCS except in four places, which a scan of its
output finds:

* a float printed with an exponent (Python switches to ``1e-05`` and ``1e+16`` sooner than
  ECMAScript) or with a trailing ``.0`` (ECMAScript prints ``1``);
* an integer beyond 2**53 - 1 (JCS refuses it);
* a character outside the Basic Multilingual Plane (Python sorts names by code point, JCS by UTF-16
  code unit; the two orders differ only there);
* a lone surrogate (not encodable as UTF-8; JCS refuses it).

Output that shows any of them, even by coincidence inside a string, is canonicalised again by
``rfc8785``, whose answer (or error) stands.  ``orjson`` writes NaN and infinities as ``null``
(JCS refuses them), so output holding a ``null`` is written again by :mod:`json`, which raises
for them, and refuses a lone surrogate, as JCS does.  Values must be JSON data: objects with
string names.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import rfc8785

# Sorted names; a date, time or dataclass is not JSON data: raise (TypeError) instead of writing it
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_ENCODE = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode
_ENCODE_STRING = json.encoder.encode_basestring  # what _ENCODE does with a str, without the method call

# A number token: after ':', '[' or ',' and before ',', ']' or '}' (a string may hold one too; a
# false match only costs the slow path).  The rule, token by token: :func:`_number_differs`.
_NUMBER = re.compile(r"[:\[,](-?[0-9][0-9.eE+-]*)(?=[,\]}])")
# The same rule as one search, with no Python per token (2.3 instead of 5.3 microseconds for a
# converted resource): a token with an exponent, ending in ".0", or of 16 characters or more after
# the sign.  The tests hold it to the rule.
_NUMBER_DIFFERS = re.compile(
    r"[:\[,]-?(?:[0-9][0-9.eE+-]*[eE][0-9.eE+-]*|[0-9][0-9.eE+-]*\.0|[0-9][0-9.eE+-]{15,})(?=[,\]}])"
)
# A character the UTF-16 order of names or UTF-8 treats differently (only non-ASCII text is searched).
_CHARACTER_DIFFERS = re.compile(r"[\U00010000-\U0010FFFF\ud800-\udfff]")
# The same two searches in UTF-8 output: an astral character is the one whose encoding starts with
# F0-F4 (orjson refuses lone surrogates)
_NUMBER_DIFFERS_UTF8 = re.compile(_NUMBER_DIFFERS.pattern.encode("ascii"))
# What every match of that search holds: a character a number token may end with, followed by
# ",", "]" or "}".  Translating to "0" and "1" and looking for b"01" is about eight times cheaper than
# the search (1.5 against 12.6 microseconds for a converted resource: times such as "12:30" make
# it try every alternative), so the search runs only on output that may match: a resource with a
# number, or text with a digit before a comma.
_NUMBER_EDGES = bytes(
    ord("0") if chr(b) in "0123456789.eE+-" else ord("1") if chr(b) in ",]}" else ord(".") for b in range(256)
)
_ASTRAL_UTF8 = re.compile(rb"[\xf0-\xf4]")


def canonical(value: Any) -> bytes:
    """The JCS bytes of ``value`` (a JSON object or array of JSON data)."""
    if not isinstance(value, dict | list):
        return rfc8785.dumps(value)
    try:
        data = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson's error: a lone surrogate, an integer beyond 64 bits, not JSON data
        return _canonical_via_json(value)
    if b"null" in data:  # maybe a NaN or an infinity that orjson wrote as null
        return _canonical_via_json(value)
    if b"01" in data.translate(_NUMBER_EDGES) and _NUMBER_DIFFERS_UTF8.search(data) is not None:
        return rfc8785.dumps(value)
    if not data.isascii() and _ASTRAL_UTF8.search(data) is not None:
        return rfc8785.dumps(value)
    return data


def _canonical_via_json(value: dict | list) -> bytes:
    """:func:`canonical` through :mod:`json`'s C encoder, which refuses NaN and infinities."""
    try:
        text = _ENCODE(value)
    except (ValueError, TypeError):  # NaN or infinity, or a value that is not JSON data
        return rfc8785.dumps(value)
    if _NUMBER_DIFFERS.search(text) is not None:
        return rfc8785.dumps(value)
    if not text.isascii() and _CHARACTER_DIFFERS.search(text) is not None:
        return rfc8785.dumps(value)
    return text.encode("utf-8")


def _number_differs(token: str) -> bool:
    """An exponent or a trailing ".0" (ECMAScript prints neither there), or 16 digits or more."""
    return "e" in token or "E" in token or token.endswith(".0") or len(token.lstrip("-")) >= 16


def canonical_string(text: str) -> bytes:
    """The JCS bytes of one JSON string (JSON's escapes are JCS's)."""
    if not text.isascii() and _CHARACTER_DIFFERS.search(text) is not None:  # a lone surrogate: JCS refuses it
        return rfc8785.dumps(text)
    return _ENCODE_STRING(text).encode("utf-8")
