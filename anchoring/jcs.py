"""RFC 8785 JSON Canonicalization Scheme (JCS) for the JSON values FHIR resources hold.

Standard library only, so that a regulator verifying a Bundle needs nothing beyond :mod:`anchoring`.
Objects are serialised with members sorted by the UTF-16 code units of their names, strings with
ECMAScript's minimal escaping, numbers as ECMAScript's ``Number.prototype.toString`` prints the
IEEE 754 double (RFC 8785 section 3.2.2.3); integers beyond 2**53 - 1 are refused as not representable.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import VerificationError

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_MAX_SAFE = 2**53 - 1  # ECMAScript's Number.MAX_SAFE_INTEGER


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _number(value: float) -> str:
    """ECMAScript Number::toString of a finite double (ECMA-262 7.1.12.1)."""
    if not math.isfinite(value):
        raise VerificationError(f"JCS: expected a finite number, found {value!r}")
    if value == 0:
        return "0"
    if value < 0:
        return "-" + _number(-value)
    mantissa, _, exp_text = repr(value).partition("e")  # repr is the shortest round-trip form
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part.rstrip("0")).lstrip("0") or "0"
    # n: position of the decimal point relative to the digits' start (value = 0.digits * 10**n)
    n = len(int_part.lstrip("0")) + int(exp_text or 0) if int_part.strip("0") else \
        int(exp_text or 0) - (len(frac_part) - len(frac_part.lstrip("0")))
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    exponent = n - 1
    sign = "+" if exponent >= 0 else "-"
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{head}e{sign}{abs(exponent)}"


def _serialise(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        if abs(value) > _MAX_SAFE:
            raise VerificationError(f"JCS: expected an integer within ±(2**53 - 1), found {value}")
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise VerificationError("JCS: expected string member names, found another type")
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be"))):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _serialise(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _serialise(item, out)
        out.append("]")
    else:
        raise VerificationError(f"JCS: expected a JSON value, found {type(value).__name__}")


def _plain(value: Any) -> bool:
    """True if the C JSON encoder's output with sorted keys is already JCS: no floats (Python and
    ECMAScript print some differently), integers within range, and member names without characters
    beyond the BMP (where code-point order and UTF-16 order differ)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, member in item.items():
                if not isinstance(key, str) or (not key.isascii() and any(ch > "\uffff" for ch in key)):
                    return False
                stack.append(member)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) or (isinstance(item, int) and not isinstance(item, bool)
                                         and abs(item) > _MAX_SAFE):
            return False
        elif not (item is None or isinstance(item, (str, bool, int))):
            return False
    return True


def canonicalize(value: Any) -> bytes:
    """The JCS bytes (UTF-8) of a JSON value as :func:`json.loads` returns it."""
    if _plain(value):
        # Same escaping as JCS: ", \\, \b \f \n \r \t, other controls as \u00xx (lower case).
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise VerificationError("JCS: expected well-formed Unicode strings, found a lone surrogate") from exc
    out: list[str] = []
    _serialise(value, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a \\ud800-style escape
        raise VerificationError("JCS: expected well-formed Unicode strings, found a lone surrogate") from exc
