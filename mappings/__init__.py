"""HL7v2-to-FHIR mappings as data (YAML), loaded by the conversion engine in bridge."""
