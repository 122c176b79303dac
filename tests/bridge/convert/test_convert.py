"""The conversion engine on hand-written messages: what goes where, ids, errors, fidelity report."""

from __future__ import annotations

import pytest

from bridge.convert import MappingError, convert, load_mappings
from bridge.hl7.types import HL7Error

MAPPINGS = load_mappings()

A01 = (
    "MSH|^~\\&|ADT|GOOD HEALTH|BRIDGE|PARTNER|20240301101500+0100||ADT^A01^ADT_A01|MSG0001|P|2.5.1\r"
    "EVN|A01|20240301101500\r"
    "PID|1||MRN123^^^GHH&1.2.3.4&ISO^MR~999-99-9999^^^SSA^SS||Everyman^Adam^Alan^Jr^Dr||19800214|M|||"
    "1 Main St^Apt 2^Ann Arbor^MI^48104^USA^H||^PRN^PH^^1^734^5551234~^NET^Internet^adam@example.org|||M\r"
    "PV1|1|I|4E^401^B^GHH^^^MAIN^4|E|||1234^Attend^Ann^^^Dr^^^NPI&2.16.840.1.113883.4.6&ISO||||||||||||"
    "V100^^^GHH&1.2.3.4&ISO^VN|||||||||||||||||||||||||20240301100000+0100\r"
    "OBX|1|NM|8302-2^Body height^LN||180|cm^centimeter^UCUM|||||F|||20240301101000+0100\r"
    "OBX|2|ST|8867-4^Heart rate^LN||regular||||||P\r"
    "AL1|1|DA|70618^Penicillin^RXNORM|SV|hives\r"
    "DG1|1||I10^Essential hypertension^I10|||W\r"
    "ZPI|1|custom value\r"
)


def _by_type(conversion, kind):
    return [r for r in conversion.resources if r["resourceType"] == kind]


def _resolve(conversion, reference):
    kind, _, rid = reference["reference"].partition("/")
    return next(r for r in conversion.resources if r["resourceType"] == kind and r["id"] == rid)


def test_adt_a01_patient():
    c = convert(A01.encode(), MAPPINGS)
    (patient,) = _by_type(c, "Patient")
    assert patient["identifier"][0]["value"] == "MRN123"
    assert patient["identifier"][0]["system"] == "urn:oid:1.2.3.4"
    assert patient["identifier"][0]["type"]["coding"][0]["code"] == "MR"
    assert patient["identifier"][1]["system"] == "urn:hl7v2:namespace:SSA"
    assert patient["name"][0] == {"family": "Everyman", "given": ["Adam", "Alan"], "suffix": ["Jr"], "prefix": ["Dr"]}
    assert patient["birthDate"] == "1980-02-14" and patient["gender"] == "male"
    assert patient["address"][0] == {"line": ["1 Main St", "Apt 2"], "city": "Ann Arbor", "state": "MI",
                                     "postalCode": "48104", "country": "USA", "use": "home"}
    assert {"system": "phone", "use": "home", "value": "+1 (734) 5551234"} in patient["telecom"]
    assert {"system": "email", "use": "home", "value": "adam@example.org"} in patient["telecom"]
    assert patient["maritalStatus"]["coding"][0]["code"] == "M"


def test_adt_a01_encounter_and_references():
    c = convert(A01.encode(), MAPPINGS)
    (encounter,) = _by_type(c, "Encounter")
    (patient,) = _by_type(c, "Patient")
    assert encounter["class"] == {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP",
                                  "display": "inpatient encounter"}
    assert encounter["status"] == "in-progress"  # the A01 event, not only PV1
    assert encounter["period"]["start"] == "2024-03-01T10:00:00+01:00"
    assert encounter["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert encounter["identifier"][0]["value"] == "V100"
    location = _resolve(c, encounter["location"][0]["location"])
    assert location["name"] == "GHH MAIN 4 4E 401 B" and location["physicalType"]["coding"][0]["code"] == "bd"
    attender = _resolve(c, encounter["participant"][0]["individual"])
    assert attender["name"][0]["family"] == "Attend"
    assert attender["identifier"][0] == {"value": "1234", "system": "urn:oid:2.16.840.1.113883.4.6"}
    assert encounter["participant"][0]["type"][0]["coding"][0]["code"] == "ATND"


def test_adt_a01_observations_allergy_condition():
    c = convert(A01.encode(), MAPPINGS)
    height, rate = _by_type(c, "Observation")
    assert height["code"]["coding"][0] == {"code": "8302-2", "display": "Body height", "system": "http://loinc.org"}
    assert height["valueQuantity"] == {"value": 180, "code": "cm", "unit": "centimeter",
                                       "system": "http://unitsofmeasure.org"}
    assert height["status"] == "final" and height["effectiveDateTime"] == "2024-03-01T10:10:00+01:00"
    assert rate["valueString"] == "regular" and rate["status"] == "preliminary"
    assert "valueQuantity" not in rate
    (allergy,) = _by_type(c, "AllergyIntolerance")
    assert allergy["category"] == ["medication"] and allergy["reaction"][0]["severity"] == "severe"
    assert allergy["reaction"][0]["manifestation"][0]["text"] == "hives"
    assert allergy["code"]["coding"][0]["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
    (condition,) = _by_type(c, "Condition")
    assert condition["code"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10"
    assert condition["category"][0]["coding"][0]["code"] == "encounter-diagnosis"


def test_fidelity_report_names_what_was_not_mapped():
    c = convert(A01.encode(), MAPPINGS)
    assert "ZPI" in c.unmapped and "EVN" in c.unmapped
    assert "DG1-6" in c.unmapped  # diagnosis type is not mapped
    assert "PID-3" not in c.unmapped and "PID-16" not in c.unmapped
    assert "OBX-1" not in c.unmapped  # set ids are structure, not content


def test_ids_are_deterministic_and_patient_ids_follow_the_person():
    first = convert(A01.encode(), MAPPINGS)
    again = convert(A01.encode(), MAPPINGS)
    assert [r["id"] for r in first.resources] == [r["id"] for r in again.resources]
    # Another feed, another message type, different demographics: same MRN system and value.
    oru = ("MSH|^~\\&|LAB|LABSYS|BRIDGE|PARTNER|20240305||ORU^R01|L77|P|2.3\r"
           "PID|1||MRN123^^^GHH&1.2.3.4&ISO^MR||EVERYMAN^ADAM\r"
           "OBR|1|P1|F1|2345-7^Glucose^LN|||20240305080000\r"
           "OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|||||F\r")
    lab = convert(oru.encode(), MAPPINGS)
    assert _by_type(lab, "Patient")[0]["id"] == _by_type(first, "Patient")[0]["id"]
    # A different assigning authority is a different identifier, so a different person.
    other = convert(oru.replace("1.2.3.4", "9.9.9").encode(), MAPPINGS)
    assert _by_type(other, "Patient")[0]["id"] != _by_type(first, "Patient")[0]["id"]
    ids = [r["id"] for r in first.resources]
    assert len(ids) == len(set(ids))


def test_oru_report_lists_its_results():
    oru = ("MSH|^~\\&|LAB|LABSYS|BRIDGE|PARTNER|20240305||ORU^R01|L77|P|2.3\r"
           "PID|1||MRN123^^^GHH&1.2.3.4&ISO^MR\r"
           "OBR|1|P1|F1|24331-1^Lipid panel^LN|||20240305080000|||||||||||||||20240305090000||CH|F\r"
           "OBX|1|NM|2093-3^Cholesterol^LN||190|mg/dL|<200|N|||F\r"
           "NTE|1||fasting sample~second note\r"
           "OBX|2|SN|2085-9^HDL^LN||>^60|mg/dL||||F\r"
           "OBX|3|SN|13457-7^LDL^LN||^100^-^129|mg/dL||||F\r")
    c = convert(oru.encode(), MAPPINGS)
    (report,) = _by_type(c, "DiagnosticReport")
    (order,) = _by_type(c, "ServiceRequest")
    obs = _by_type(c, "Observation")
    assert report["status"] == "final" and report["basedOn"] == [{"reference": f"ServiceRequest/{order['id']}"}]
    assert [r["reference"] for r in report["result"]] == [f"Observation/{o['id']}" for o in obs]
    assert obs[0]["interpretation"][0]["coding"][0]["code"] == "N"
    assert obs[0]["note"] == [{"text": "fasting sample"}, {"text": "second note"}] and "note" not in obs[1]
    assert obs[0]["effectiveDateTime"] == report["effectiveDateTime"] == "2024-03-05T08:00:00Z"  # from OBR-7
    assert obs[1]["valueQuantity"] == {"value": 60, "comparator": ">", "code": "mg/dL", "unit": "mg/dL"}
    assert obs[2]["valueRange"] == {"low": {"value": 100}, "high": {"value": 129}}
    assert {i["type"]["coding"][0]["code"] for i in order["identifier"]} == {"PLAC", "FILL"}


def test_vxu_immunization():
    vxu = ("MSH|^~\\&|EHR|CLINIC|IIS|STATE|20240105||VXU^V04^VXU_V04|V1|P|2.5.1\r"
           "PID|1||P42^^^CLINIC^MR||Kid^Kim||20200101|F\r"
           "ORC|RE||IZ-99^CLINIC\r"
           "RXA|0|1|20240105093000||08^Hep B, adolescent or pediatric^CVX|0.5|mL^mL^UCUM||00^New record^NIP001|"
           "|||||LOT123|20250101|MSD^Merck^MVX|||CP|A\r"
           "RXR|C28161^Intramuscular^NCIT|LA^Left Arm^HL70163\r")
    c = convert(vxu.encode(), MAPPINGS)
    (imm,) = _by_type(c, "Immunization")
    assert imm["vaccineCode"]["coding"] == [{"code": "08", "display": "Hep B, adolescent or pediatric",
                                             "system": "http://hl7.org/fhir/sid/cvx"}]
    assert imm["occurrenceDateTime"] == "2024-01-05T09:30:00Z"  # no offset given: the site time zone (UTC)
    assert imm["lotNumber"] == "LOT123" and imm["expirationDate"] == "2025-01-01"
    assert imm["status"] == "completed" and imm["primarySource"] is True
    assert imm["doseQuantity"] == {"value": 0.5, "code": "mL", "unit": "mL", "system": "http://unitsofmeasure.org"}
    assert imm["route"]["coding"][0]["code"] == "C28161" and imm["site"]["coding"][0]["code"] == "LA"
    assert _resolve(c, imm["manufacturer"])["name"] == "Merck"
    assert imm["identifier"][0]["value"] == "IZ-99"


def test_a40_merge_links_both_patients():
    a40 = ("MSH|^~\\&|ADT|GHH|BRIDGE|P|20240301||ADT^A40^ADT_A39|M1|P|2.5\r"
           "EVN|A40|20240301\r"
           "PID|1||KEEP1^^^GHH^MR||Doe^Jane\r"
           "MRG|GONE1^^^GHH^MR\r")
    c = convert(a40.encode(), MAPPINGS)
    survivor, gone = _by_type(c, "Patient")
    assert survivor["link"] == [{"type": "replaces", "other": {"reference": f"Patient/{gone['id']}"}}]
    assert gone["link"] == [{"type": "replaced-by", "other": {"reference": f"Patient/{survivor['id']}"}}]
    assert gone["active"] is False
    # The merged-away record has the id it had when it was converted on its own.
    alone = convert(a40.replace("KEEP1", "GONE1").replace("ADT^A40^ADT_A39", "ADT^A08").replace("MRG|GONE1^^^GHH^MR\r", "")
                    .encode(), MAPPINGS)
    assert _by_type(alone, "Patient")[0]["id"] == gone["id"]


@pytest.mark.parametrize("message,code,location", [
    ("MSH|^~\\&|A|B|C|D|20240101||BAR^P01|1|P|2.5\rPID|1||1\r", "200", "MSH-9"),
    ("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|\rPID|1||1\r", "101", "MSH-12"),
    ("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.2\rPID|1||1\r", "203", "MSH-12"),
    ("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rEVN|A01\r", "100", "PID"),
    ("MSH|^~\\&|A|B|C|D|20240101||VXU^V04|1|P|2.5\rPID|1||1\rRXA|0|1|2024-01-05||08^x^CVX\r", "102", "RXA-3"),
    ("MSH|^~\\&|A|B|C|D|20240101||VXU^V04|1|P|2.5\rPID|1||1\rRXA|0|1|\"\"||08^x^CVX\r", "101", "RXA-3"),
    ("PID|1||1\r", "100", "MSH"),
])
def test_errors_carry_code_and_location(message, code, location):
    with pytest.raises(HL7Error) as err:
        convert(message.encode(), MAPPINGS)
    assert (err.value.code, err.value.location) == (code, location)
    assert err.value.text


def test_malformed_optional_value_is_a_warning_not_a_rejection():
    bad = A01.replace("|19800214|", "|1980-02-14|")
    c = convert(bad.encode(), MAPPINGS)
    assert "birthDate" not in _by_type(c, "Patient")[0]
    assert any(w.startswith("PID-7") for w in c.warnings)
    assert "PID-7" in c.unmapped


def test_timezone_setting(tmp_path):
    (tmp_path / "site.yaml").write_text("settings:\n  timezone: Europe/Berlin\n")
    site = load_mappings(tmp_path)
    msg = A01.replace("20240301100000+0100", "20240701100000")  # summer: +02:00
    encounter = _by_type(convert(msg.encode(), site), "Encounter")[0]
    assert encounter["period"]["start"] == "2024-07-01T10:00:00+02:00"


def test_broken_override_is_refused_with_its_name(tmp_path):
    (tmp_path / "bad.yaml").write_text("segments:\n  ZPI:\n    resource: Patient\n    fields:\n"
                                       "      2: {path: x, datatype: NOPE}\n")
    with pytest.raises(MappingError, match="NOPE"):
        load_mappings(tmp_path)
    (tmp_path / "bad.yaml").write_text("nonsense: 1\n")
    with pytest.raises(MappingError, match="top-level"):
        load_mappings(tmp_path)


def test_discharge_updates_the_same_encounter():
    admit = convert(A01.encode(), MAPPINGS)
    a03 = A01.replace("ADT^A01^ADT_A01|MSG0001", "ADT^A03^ADT_A03|MSG0002").replace("EVN|A01", "EVN|A03")
    discharge = convert(a03.encode(), MAPPINGS)
    before, after = _by_type(admit, "Encounter")[0], _by_type(discharge, "Encounter")[0]
    assert before["id"] == after["id"]  # same visit number: a new version, not a second encounter
    assert (before["status"], after["status"]) == ("in-progress", "finished")
    assert discharge.header.control_id == "MSG0002" and discharge.header.message_type == "ADT^A03"
