"""Consent rules and decisions (pure) and the consent CLI."""

from __future__ import annotations

import json

from bridge.api import create_app
from bridge.cli import main
from bridge.config import load_config
from bridge.consent import compile_consent, decide, rules_of, validate_consent
from bridge.fhir_dates import parse_range
from bridge.services import open_services

from .fhir_support import bearer, consent, observation, patient, put


def test_rules_and_decisions():
    permit = rules_of(consent("a", "p1", "org-a", classes=("Observation",)))
    assert decide(permit, "org-a", "Observation", "opt-in").permitted
    assert not decide(permit, "org-a", "Condition", "opt-in").permitted
    assert not decide(permit, "org-b", "Observation", "opt-in").permitted
    assert decide(permit, "org-b", "Observation", "opt-out").permitted
    nested = consent("b", "p1", None)  # everyone, except org-x for Condition
    nested["provision"]["provision"] = [{"type": "deny", "actor": [{"role": {"text": "r"},
                                                                    "reference": {"reference": "Organization/org-x"}}],
                                         "class": [{"code": "Condition"}]}]
    rules = rules_of(nested)
    assert decide(rules, "org-x", "Observation", "opt-in").permitted
    assert not decide(rules, "org-x", "Condition", "opt-in").permitted
    assert rules_of(consent("c", "p1", "org-a", status="inactive")) == []
    expired = consent("d", "p1", "org-a")
    expired["provision"]["period"] = {"end": "2020-01-01"}
    assert rules_of(expired, now="2026-01-01T00:00:00+00:00") == []
    assert validate_consent({"resourceType": "Consent", "status": "active"}).startswith("Consent.patient")


def test_consent_cli(tmp_path, monkeypatch, capsys, config):
    monkeypatch.setenv("FHIR_BRIDGE_DATA_DIR", str(config.data_dir))
    monkeypatch.setenv("FHIR_BRIDGE_DATABASE_URL", config.resolved_database_url)
    monkeypatch.setenv("FHIR_BRIDGE_LOG_ORIGIN", config.log_origin)
    path = tmp_path / "consent.json"
    path.write_text(json.dumps(consent("cli-1", "p1", "org-a")))
    assert main(["consent", "add", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "Consent/cli-1/_history/1"
    assert main(["consent", "revoke", "cli-1"]) == 0
    assert capsys.readouterr().out.strip() == "Consent/cli-1/_history/2"
    assert main(["consent", "list", "--patient", "p1"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["status"] == "inactive" and listed["version"] == "2"
    path.write_text(json.dumps({"resourceType": "Consent"}))
    assert main(["consent", "add", str(path)]) == 2
    assert main(["consent", "revoke", "nope"]) == 2


def test_consent_periods_are_date_ranges_with_zones_and_precision():
    def with_period(period, kind="permit"):  # type: ignore[no-untyped-def]
        c = consent("p", "p1", "org-a")
        c["provision"]["period"] = period
        c["provision"]["type"] = kind
        return c

    day_end = with_period({"end": "2026-03-01"})  # the whole of 1 March (UTC) is covered
    assert rules_of(day_end, now="2026-03-01T23:59:59Z")
    assert not rules_of(day_end, now="2026-03-02T00:00:00Z")
    # 2026-03-01T20:00:00-05:00 is 01:00 UTC on the 2nd: past the end, whatever the text says
    assert not rules_of(day_end, now="2026-03-01T20:00:00-05:00")
    starts = with_period({"start": "2026-03-02T00:00:00+02:00"})  # 22:00 UTC on the 1st
    assert rules_of(starts, now="2026-03-01T22:30:00Z")
    assert not rules_of(starts, now="2026-03-01T21:59:59Z")
    # an unreadable period: a permit does not count, a deny still does (consent errs towards not sharing)
    assert rules_of(with_period({"end": "next year"}), now="2026-01-01T00:00:00Z") == []
    denies = rules_of(with_period({"end": "next year"}, "deny"), now="2026-01-01T00:00:00Z")
    assert len(denies) == 1 and not denies[0].permit
    nested = consent("n", "p1", None)
    nested["provision"]["provision"] = [{"type": "deny", "period": {"start": "2026-06-01"},
                                         "actor": [{"reference": {"reference": "Organization/org-x"}}]}]
    assert decide(rules_of(nested, now="2026-05-31T23:00:00Z"), "org-x", "Observation", "opt-in").permitted
    assert not decide(rules_of(nested, now="2026-06-01T00:00:00Z"), "org-x", "Observation", "opt-in").permitted


def test_a_consent_with_an_unreadable_period_is_refused():
    good = consent("v", "p1", "org-a")
    assert validate_consent(good) is None
    good["provision"]["period"] = {"start": "2026-02-30"}
    assert validate_consent(good).startswith("Consent.provision.period: '2026-02-30'")
    nested = consent("w", "p1", "org-a")
    nested["provision"]["provision"] = [{"type": "deny", "period": {"start": "2026-05-01", "end": "2026-04-01"}}]
    assert "ends before it starts" in validate_consent(nested)


def test_a_compiled_consent_applies_its_periods_at_the_moment_asked():
    """Compiled once, decided at any moment: the nested deny holds only within its period, and the
    root permit only within the root's."""
    c = consent("t", "p1", "org-a")
    c["provision"]["period"] = {"start": "2026-01-01", "end": "2026-12-31"}
    c["provision"]["provision"] = [{"type": "deny", "period": {"start": "2026-06-01", "end": "2026-06-30"},
                                    "class": [{"code": "Observation"}]}]
    compiled = compile_consent(c)

    def at(when: str, category: str = "Observation") -> bool:
        return decide(compiled.rules_at(parse_range(when).low), "org-a", category, "opt-in").permitted

    assert not at("2025-12-31T23:59:59Z") and at("2026-01-01T00:00:00Z") and at("2026-05-31T23:59:59Z")
    assert not at("2026-06-15T12:00:00Z") and at("2026-06-15T12:00:00Z", "Condition")
    assert at("2026-07-01T00:00:00Z") and not at("2027-01-01T00:00:00Z")
    assert compiled.rules_at(parse_range("2026-06-15").low) == rules_of(c, now="2026-06-15T00:00:00Z")


def test_consents_compiled_in_one_database_never_decide_for_another(tmp_path):
    """The process-wide cache names a version by its salted hash: the same Consent id and version in
    two stores (here permit in one, deny in the other) are two entries."""
    answers = []
    for name, kind in (("a", "permit"), ("b", "deny")):
        config = load_config(env={}, data_dir=tmp_path / name, log_origin="test.example/log")
        services = open_services(config)
        c = consent("same-id", "p1", "org-a")
        c["provision"]["type"] = kind
        put(services, patient("p1", "Diaz", "Ana", "female", "1980-01-01"), c,
            observation("o1", "p1", "2339-0", "2026-01-01T10:00:00Z"))
        client = create_app(services=services).test_client()
        answers.append(client.get("/fhir/Observation/o1", headers=bearer(services, "org-a")).status_code)
        services.close()
    assert answers == [200, 403]
