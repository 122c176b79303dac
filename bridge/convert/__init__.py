"""Declarative HL7v2 -> FHIR R4 conversion: the engine here, the mapping data in ``mappings/``.

    mappings = load_mappings()            # or load_mappings(Path("/etc/bridge/mappings"))
    conversion = convert(raw, mappings)   # Conversion(header, resources, unmapped, warnings)
"""

from .engine import convert
from .loader import MappingError, Mappings, load_mappings

__all__ = ["Mappings", "MappingError", "convert", "load_mappings"]
