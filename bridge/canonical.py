"""RFC 8785 (JCS) canonical JSON, quickly, for the values the bridge stores.

Every stored version and every log leaf is canonicalised, often a dozen per HL7v2 message, so the
cost matters: ``rfc8785.dumps`` walks the value in Python (about 0.1 ms a resource).  For JSON data
the C encoder of :mod:`json` with sorted keys, no whitespace and no ASCII escaping writes the same
bytes as JCS except in four places, which a scan of its output finds:

* a float printed with an exponent (Python switches to ``1e-05`` and ``1e+16`` sooner than
  ECMAScript) or with a trailing ``.0`` (ECMAScript prints ``1``);
* an integer beyond 2**53 - 1 (JCS refuses it);
* a character outside the Basic Multilingual Plane (Python sorts names by code point, JCS by UTF-16
  code unit; the two orders differ only there);
* a lone surrogate (not encodable as UTF-8; JCS refuses it).

Output that shows any of them, even by coincidence inside a string, is canonicalised again by
``rfc8785``, whose answer (or error) stands.  Values must be JSON data: objects with string names.
"""

from __future__ import annotations

import json
import re
from typing import Any

import rfc8785

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


def canonical(value: Any) -> bytes:
    """The JCS bytes of ``value`` (a JSON object or array of JSON data)."""
    if not isinstance(value, dict | list):
        return rfc8785.dumps(value)
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
