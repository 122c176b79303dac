"""Patient consent to partner reads: FHIR R4 Consent resources, evaluated at every request.

A Consent counts when ``status`` is ``active`` and ``provision.period`` (if any) covers now, periods
read as FHIR date ranges (time zones and precision honoured: an ``end`` of ``2026-03-01`` covers
that whole day).  A provision whose period cannot be read keeps only its deny rules: consent errs
towards not sharing.  Each
provision (the root and every nested one) is a rule: ``type`` permit or deny; ``actor`` the
organisations it names (``Organization/<id>`` references, or identifiers with that value; none =
every organisation); ``class`` the categories it covers as FHIR resource-type codes (none = all).
A nested provision without actors or classes inherits its parent's.

Decision for (organisation, category): a matching deny rule denies (deny wins); else a matching
permit rule permits; else the regime decides: ``opt-in`` denies, ``opt-out`` permits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from .fhir_dates import DateValueError, parse_range, period_range

REGIMES = ("opt-in", "opt-out")
STATUSES = ("draft", "proposed", "active", "rejected", "inactive", "entered-in-error")
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"


@dataclass(frozen=True)
class Rule:
    permit: bool
    actors: frozenset[str] | None  # organisation ids; None: any
    classes: frozenset[str] | None  # resource types; None: all

    def matches(self, organization: str, category: str) -> bool:
        return (self.actors is None or organization in self.actors) and \
            (self.classes is None or category in self.classes)


@dataclass(frozen=True)
class Decision:
    permitted: bool
    reason: str


def _actors(provision: dict) -> frozenset[str] | None:
    found = set()
    for actor in provision.get("actor") or []:
        ref = (actor.get("reference") or {}) if isinstance(actor, dict) else {}
        text = ref.get("reference")
        if isinstance(text, str) and text.startswith("Organization/"):
            found.add(text.split("/", 1)[1])
        ident = (ref.get("identifier") or {}).get("value")
        if isinstance(ident, str):
            found.add(ident)
    return frozenset(found) if found else None


def _classes(provision: dict) -> frozenset[str] | None:
    found = {c.get("code") for c in provision.get("class") or [] if isinstance(c, dict) and c.get("code")}
    return frozenset(found) if found else None


def _span(provision: dict) -> tuple[int, int] | None:
    """The provision's period as microseconds [low, high) (no period: all time); None when the
    period cannot be read."""
    period = provision.get("period")
    if not period:
        return (-(2**63), 2**63)
    try:
        found = period_range(period) if isinstance(period, dict) else None
    except DateValueError:
        found = None
    return None if found is None else (found.low, found.high)


def period_problem(provision: dict) -> str | None:
    """Why a provision's period (or a nested one's) cannot be read, or None."""
    period = provision.get("period")
    if period:
        try:
            if not isinstance(period, dict):
                raise DateValueError("a Period is an object with start and/or end")
            period_range(period)
        except DateValueError as exc:
            return str(exc)
    for nested in provision.get("provision") or []:
        problem = period_problem(nested) if isinstance(nested, dict) else None
        if problem:
            return problem
    return None


@dataclass(frozen=True)
class _Timed:
    """A rule with the periods it is bound by: its provision's and every enclosing one's (a period
    that cannot be read binds nothing, but then the rule is kept only if it denies)."""

    rule: Rule
    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class CompiledConsent:
    """What a Consent decides, read once (a stored version never changes); :meth:`rules_at` applies
    the periods to a moment, so a cached compilation stays right as time passes."""

    timed: tuple[_Timed, ...]

    def rules_at(self, instant: int) -> list[Rule]:
        """The rules in force at ``instant`` (microseconds since the epoch)."""
        return [t.rule for t in self.timed if all(low <= instant < high for low, high in t.spans)]


def compile_consent(consent: dict) -> CompiledConsent:
    """Pure: the rules of one Consent with their periods (none unless it is active)."""
    root = consent.get("provision")
    if consent.get("status") != "active" or not isinstance(root, dict):
        return CompiledConsent(())
    timed: list[_Timed] = []

    def walk(provision: dict, actors: frozenset[str] | None, classes: frozenset[str] | None,
             spans: tuple[tuple[int, int], ...], sure: bool) -> None:
        span = _span(provision)
        if span is not None:
            spans += (span,)  # outside it, neither this provision nor its nested ones apply
        sure = sure and span is not None
        actors, classes = _actors(provision) or actors, _classes(provision) or classes
        kind = provision.get("type")
        if kind == "deny" or (kind == "permit" and sure):  # an unreadable period permits nothing
            timed.append(_Timed(Rule(kind == "permit", actors, classes), spans))
        for nested in provision.get("provision") or []:
            if isinstance(nested, dict):
                walk(nested, actors, classes, spans, sure)

    walk(root, None, None, (), True)
    return CompiledConsent(tuple(timed))


def now_micros() -> int:
    return time.time_ns() // 1000  # microseconds, as date ranges are


def rules_of(consent: dict, now: str | None = None) -> list[Rule]:
    """The rules of one Consent in force at ``now`` (a FHIR instant, default the current time); pure
    but for the clock."""
    return compile_consent(consent).rules_at(parse_range(now).low if now else now_micros())


def decide(rules: Iterable[Rule], organization: str, category: str, regime: str) -> Decision:
    rules = list(rules)
    if any(not r.permit and r.matches(organization, category) for r in rules):
        return Decision(False, f"the patient's consent denies {organization} access to {category}")
    if any(r.permit and r.matches(organization, category) for r in rules):
        return Decision(True, "permitted by the patient's consent")
    if regime == "opt-out":
        return Decision(True, "no consent denies it (opt-out regime)")
    return Decision(False, f"no active consent of the patient permits {organization} access to {category} (opt-in regime)")


def validate_consent(resource: dict) -> str | None:
    """Why a Consent cannot be accepted, or None; checks what the decisions rely on."""
    if resource.get("resourceType") != "Consent":
        return "resourceType: expected Consent"
    if resource.get("status") not in STATUSES:
        return f"Consent.status: expected one of {', '.join(STATUSES)}"
    ref = (resource.get("patient") or {}).get("reference")
    if not isinstance(ref, str) or not ref.startswith("Patient/") or ref.count("/") != 1:
        return "Consent.patient: expected a reference Patient/<id>"
    provision = resource.get("provision")
    if not isinstance(provision, dict) or provision.get("type") not in ("permit", "deny"):
        return "Consent.provision.type: expected permit or deny"
    problem = period_problem(provision)
    if problem:
        return f"Consent.provision.period: {problem}"
    return None
