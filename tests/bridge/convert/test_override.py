"""A site override folder merges over the default mappings without code changes."""

from __future__ import annotations

from pathlib import Path

from bridge.convert import convert, load_mappings

MESSAGE = (
    "MSH|^~\\&|ADT|GHH|BRIDGE|P|20240301||ADT^A01|Z1|P|2.5\r"
    "PID|1||MRN1^^^GHH^MR||Doe^Jane||19900101|X|||||||||||123-45-6789\r"
    "ZPI|1|Rex^dog|Y\r"
)

SITE = """
# Our Z-segment: ZPI-2 the patient's pet (name^species), ZPI-3 organ donor flag.
segments:
  ZPI:
    resource: Patient
    merge: always            # ZPI describes the PID patient
    fields:
      1: {consumed: true}
      2: {path: "extension[]", component: 1, datatype: ST, element: valueString,
          fixed: {url: "http://ghh.example/fhir/StructureDefinition/pet-name"}}
      3: {path: "extension[]", datatype: BOOL, element: valueBoolean,
          fixed: {url: "http://ghh.example/fhir/StructureDefinition/organ-donor"}}
  PID:
    fields:
      19: null               # we do not keep social security numbers
messages:
  adt-admit:
    segments:
      ZPI: ZPI
vocabulary:
  "0001":
    map:
      X: unknown             # our registration desk uses X for "not asked"
  assigning-authority:
    map:
      GHH: "https://ghh.example/fhir/mrn"
"""


def _patient(conversion):
    return next(r for r in conversion.resources if r["resourceType"] == "Patient")


def test_without_override_the_z_segment_is_reported_unmapped():
    c = convert(MESSAGE.encode(), load_mappings())
    assert "ZPI" in c.unmapped
    patient = _patient(c)
    assert "extension" not in patient and patient["gender"] == "other"
    assert any(i.get("system") == "http://hl7.org/fhir/sid/us-ssn" for i in patient["identifier"])


def test_override_maps_the_z_segment_and_site_rules(tmp_path: Path):
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "zpi.yaml").write_text(SITE)
    site = load_mappings(tmp_path)
    c = convert(MESSAGE.encode(), site)
    assert not any(u.startswith("ZPI") for u in c.unmapped)
    patient = _patient(c)
    assert {"url": "http://ghh.example/fhir/StructureDefinition/pet-name", "valueString": "Rex"} in patient["extension"]
    assert {"url": "http://ghh.example/fhir/StructureDefinition/organ-donor", "valueBoolean": True} in patient["extension"]
    assert patient["gender"] == "unknown"
    assert patient["identifier"] == [{"value": "MRN1", "system": "https://ghh.example/fhir/mrn",
                                      "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                           "code": "MR"}]}}]
    assert "PID-19" in c.unmapped
    # The defaults are untouched for everybody else.
    assert "ZPI" in convert(MESSAGE.encode(), load_mappings()).unmapped
    assert str(tmp_path / "segments" / "zpi.yaml") in site.sources
