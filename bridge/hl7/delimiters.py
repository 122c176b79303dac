"""The delimiters a message declares in MSH-1 and MSH-2 (or FHS/BHS for batch headers)."""

from __future__ import annotations

from dataclasses import dataclass

from .types import HL7Error


@dataclass(frozen=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""  # MSH-2 fifth character, v2.7+

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


DEFAULT = Delimiters()
# What the header lines of a feed declare, read once: (segment name, field separator, encoding
# characters, strict) -> (the Delimiters, the warnings).  The same object for every message, so that
# what was worked out for one message's delimiters (rules.field_rule) is recognised by identity.
_READ: dict[tuple[str, str, str, bool], tuple[Delimiters, tuple[str, ...]]] = {}
_REMEMBERED = 64  # distinct declarations kept; more, and they are forgotten


def read_delimiters(header_line: str, strict: bool = True) -> tuple[Delimiters, list[str]]:
    """Delimiters of a header segment line (``MSH|^~\\&|...``) and any warnings.

    ``strict`` rejects what the standard rejects (fewer than four or more than five encoding
    characters, duplicates, whitespace); the lenient mode, used to read a header well enough
    to acknowledge a broken message, fills gaps with defaults instead.
    """
    if len(header_line) < 4:
        raise HL7Error("102", f"{header_line[:3]}-1", "no field separator after the segment name")
    field = header_line[3]
    end = header_line.find(field, 4)
    chars = header_line[4:] if end < 0 else header_line[4:end]
    key = (header_line[:3], field, chars, strict)
    known = _READ.get(key)
    if known is None:
        if len(_READ) >= _REMEMBERED:
            _READ.clear()
        delimiters, warnings = _read(header_line[:3], field, chars, strict)  # raises for what is refused
        known = _READ[key] = (delimiters, tuple(warnings))
    return known[0], list(known[1])


def _read(name: str, field: str, chars: str, strict: bool) -> tuple[Delimiters, list[str]]:
    warnings: list[str] = []
    where = f"{name}-2"
    if field.isalnum() or field in " \r\n":
        raise HL7Error("102", f"{name}-1", f"field separator {field!r} is not usable")
    if len(chars) == 5 and chars[2] == chars[3] == "\\":
        # "^~\\&": a doubled escape character left by string-escaping in the sender's source code.
        chars = chars[:3] + chars[4:]
        warnings.append(f"{where}: doubled escape character in the encoding characters read as one")
    problem = ""
    if not 4 <= len(chars) <= 5:
        problem = f"{len(chars)} encoding characters {chars!r}; 4 or 5 are required"
    elif len(set(chars + field)) != len(chars) + 1:
        problem = f"encoding characters {chars!r} repeat each other or the field separator"
    elif any(c.isspace() for c in chars):
        # Letters are allowed (hl7apy accepts "$r?@"); whitespace would break the segment structure.
        problem = f"encoding characters {chars!r} include whitespace"
    if problem:
        if strict:
            raise HL7Error("102", where, problem)
        warnings.append(f"{where}: {problem}; defaults used where needed")
        chars = _lenient(chars, field)
    return (
        Delimiters(field, chars[0], chars[1], chars[2], chars[3], chars[4] if len(chars) > 4 else ""),
        warnings,
    )


def _lenient(chars: str, field: str) -> str:
    """Keep the usable declared characters in order and complete them from the defaults."""
    kept: list[str] = []
    for c in chars[:4]:
        if c != field and c not in kept and not c.isspace():
            kept.append(c)
        else:
            kept.append("")
    for i, default in enumerate("^~\\&"):
        if not kept[i:i + 1] or not kept[i]:
            spare = next(c for c in default + "^~\\&!@$%*" if c != field and c not in kept)
            if i < len(kept):
                kept[i] = spare
            else:
                kept.append(spare)
    return "".join(kept[:4])
