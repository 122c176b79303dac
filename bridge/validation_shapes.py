"""A fast path for FHIR R4 validation: learn the *shapes* of valid resources, then check only values.

The mapping engine emits few shapes: the same keys and kinds of value, with other values.  When
``fhir.resources`` accepts a resource, its shape is compiled into one pydantic-core validator:
per object a dict of those keys (no others), per primitive (a *unit*, which may also be a list of
primitives such as ``"given"``) a check that it is not null followed by the very core schema the
R4B model applies to that element, and ``resourceType`` fixed to its value.  A later resource is
valid if a validator learnt for its type and top-level keys accepts it: one call into Rust instead
of a model per element.  The fast path only ever says "valid"; a failing value, an unknown shape
or anything not understood goes to full validation, which alone says what is wrong.

Why acceptance by such a validator implies acceptance by full validation (fhir_core 1.x,
fhir.resources 8.x R4B; what this relies on is checked per class in :func:`_fields_of`):

* pydantic validates each field from its value alone; each unit passes the same core schema as in
  the model (taken from its ``__pydantic_core_schema__``; the models' config holds nothing that
  changes how a primitive is validated), and each nested object is validated as an object of the
  class full validation chose, which depends on the field and ``resourceType`` only.
* The model validators read no values, only: unknown keys (``extra="forbid"``: no key unseen is
  accepted), ``__init__`` comparing ``resourceType`` (fixed), ``reject_null_complex_elements``
  (a null in a list of objects: kept where it was, or absent), ``FHIRPrimitiveExtension``'s
  "id, extension or fhir_comments" rule (all its keys as learnt), required primitives and choice
  types ``[x]`` (which elements are not null: those fields are as learnt, and no unit schema makes
  null of a value) and whether an extension list is empty.
* So the learnt shape may relax what no validator reads: a field outside those rules may be left
  out, a list of objects may have any number (at least one) of objects each of a shape seen in it,
  a list of primitives any length.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import SchemaValidator, core_schema

MAX_SHAPES = 2048  # validators kept per process; all are dropped when full
MAX_PER_GROUP = 8  # shapes tried for one resource type and set of top-level keys
_MODEL_KEYS = ("resourceType", "resource_type")  # consumed by FHIRAbstractModel.__init__ itself

# The model validators whose effect depends only on the shape (see the module docstring)
_KNOWN_VALIDATORS = frozenset({
    "FHIRAbstractModel.reject_null_complex_elements",
    "FHIRAbstractModel.validate_after_model_construction",
    "FHIRPrimitiveExtension.validate_extension_or_fhir_comment_required",
})
_FHIR_ELEMENT = "FhirBase.__get_pydantic_core_schema__.<locals>._validate"  # validates a nested model
# Primitive schemas that turn a value into a value (never null) or fail: only they may be units
_PRIMITIVE_TYPES = frozenset({"str", "int", "bool", "float", "uuid"})
_PRIMITIVE_FUNCTIONS = frozenset({
    "Date._validate", "DateTime._validate", "Instant._validate",
    "Time.__get_pydantic_core_schema__.<locals>._validate",
    "Decimal.__get_pydantic_core_schema__.<locals>._validate",
    "Url.__get_pydantic_core_schema__.<locals>._validate",
    "EncodedBytes.decode",
})
_CONFIG_KEYS = frozenset({"title", "extra_fields_behavior", "validate_by_alias", "validate_by_name"})

_VALUE = core_schema.is_instance_schema((str, int, float, bool))  # a JSON primitive, not null
_NULL = core_schema.none_schema()
_DICT = core_schema.is_instance_schema(dict)
_LIST = core_schema.is_instance_schema(list)

_groups: dict[tuple, list[SchemaValidator]] = {}  # (model, top-level keys) -> validators, most recent first
_learnt = 0


class _Unlearnable(Exception):
    """This resource (though valid) has something the fast path does not check exactly."""


def passes(model: type, resource: dict) -> bool:
    """True when a shape learnt for ``model`` accepts ``resource``: then full validation would too."""
    group = _groups.get((model, tuple(resource)))
    if not group:
        return False
    for at, checker in enumerate(group):
        try:
            checker.validate_python(resource)
        except Exception:  # noqa: BLE001, S112 - not this shape (or a bad value): try the next, then the full way
            continue
        if at:
            group.insert(0, group.pop(at))  # feeds repeat a few shapes: keep the busiest first
        return True
    return False


def learn(model: type, resource: dict, instance: Any) -> None:
    """Remember the shape of ``resource``, which full validation just turned into ``instance``."""
    global _learnt
    try:
        checker = SchemaValidator(_object(resource, instance))
        checker.validate_python(resource)  # it must accept what it was learnt from
    except Exception:  # noqa: BLE001 - unlearnable: this shape stays with full validation
        return
    if _learnt >= MAX_SHAPES:
        clear()
    group = _groups.setdefault((model, tuple(resource)), [])
    group.insert(0, checker)
    _learnt += 1
    if len(group) > MAX_PER_GROUP:
        group.pop()


def clear() -> None:
    """Forget every learnt shape (tests, or after changing fhir_core's constraints)."""
    global _learnt
    _groups.clear()
    _learnt = 0


def _object(node: dict, instance: Any) -> dict:
    """The schema accepting objects of ``node``'s shape whose units pass the model's schemas."""
    fields = _fields_of(type(instance))
    kept = _kept(instance)
    seen = set()
    out = {}
    for name, value in node.items():
        if type(name) is not str:
            raise _Unlearnable(repr(name))
        if name in _MODEL_KEYS:  # its value chooses/checks a class (or is a field): part of the shape
            if type(value) is not str:
                raise _Unlearnable(name)
            schema = core_schema.chain_schema([core_schema.is_instance_schema(str), core_schema.literal_schema([value])])
        else:
            field, unit, element = fields[name]
            if field in seen:  # one field given by both its name and its alias
                raise _Unlearnable(name)
            seen.add(field)
            schema = _value(value, getattr(instance, field), unit, element)
            if kept is not None and field not in kept:  # no validator reads whether it is there
                out[name] = core_schema.typed_dict_field(schema, required=False)
                continue
        out[name] = core_schema.typed_dict_field(schema, required=True)
    return core_schema.chain_schema([_DICT, core_schema.typed_dict_schema(out, extra_behavior="forbid")])


_KEPT: dict[type, frozenset | None] = {}


def _kept(instance: Any) -> frozenset | None:
    """The fields whose presence a model validator reads (None: any may be): a learnt object must
    have them as it had them, while the others may also be left out (extra keys stay forbidden)."""
    model = type(instance)
    if model in _KEPT:
        return _KEPT[model]
    kept = None
    validators = {d.func.__qualname__ for d in model.__pydantic_decorators__.model_validators.values()}
    if validators <= _KNOWN_VALIDATORS - {"FHIRPrimitiveExtension.validate_extension_or_fhir_comment_required"}:
        aliases = model.get_alias_mapping()
        kept = {aliases[name] for name, _ in instance.get_required_fields()}
        kept |= {ext for _, ext in instance.get_required_fields() if ext}
        kept |= {field for choice in instance.get_one_of_many_fields().values() for field in choice}
        kept |= {name for name, field in model.model_fields.items() if field.is_required()}
        kept = frozenset(kept)
    _KEPT[model] = kept
    return kept


def _value(value: Any, inner: Any, unit: dict, element: str) -> dict:
    if value is None:
        return _NULL
    if type(value) is dict:
        if element != "one":
            raise _Unlearnable("an object where no element is")
        return _object(value, inner)
    if type(value) is list and any(type(item) is dict for item in value):
        if element != "list" or type(inner) is not list or len(inner) != len(value):
            raise _Unlearnable("a list of objects where no elements are")
        items = [_NULL if item is None else _object(item, part) for item, part in zip(value, inner, strict=True)]
        if _NULL in items:  # nulls only in "_given"-style lists: kept where they were
            return core_schema.chain_schema([_LIST, core_schema.tuple_schema(items)])
        # Objects only: validators read no more of the list than "not empty", so any number of
        # objects, each of a shape seen in it, will do (two locations or three)
        kinds: list = []
        for item in items:
            if item not in kinds:
                kinds.append(item)
        each = kinds[0] if len(kinds) == 1 else core_schema.union_schema(kinds, mode="left_to_right")
        return core_schema.chain_schema([_LIST, core_schema.list_schema(each, min_length=1)])
    if type(value) is list:
        if not value and element == "list":  # no objects: passes the list schema, no null to reject
            return core_schema.chain_schema([_LIST, core_schema.tuple_schema([])])
        # Primitives, and nulls lining "_given"-style extensions up: no model validator reads their
        # number or nulls, so one schema serves any length, the field's own
        _check_primitive(unit)
        return core_schema.chain_schema([_LIST, unit])
    if type(value) not in (str, int, float, bool):
        raise _Unlearnable(type(value).__name__)
    _check_primitive(unit)
    return core_schema.chain_schema([_VALUE, unit])


def _check_primitive(schema: dict) -> None:
    """Raise unless ``schema`` is one of fhir_core's primitives (maybe nullable, listed or a union)."""
    kind = schema["type"]
    if kind in ("nullable", "default"):
        _check_primitive(schema["schema"])
    elif kind in ("list", "union"):
        for part in [schema["items_schema"]] if kind == "list" else schema["choices"]:
            _check_primitive(part)
    elif kind in ("function-wrap", "function-after"):
        if getattr(schema["function"].get("function"), "__qualname__", None) not in _PRIMITIVE_FUNCTIONS:
            raise _Unlearnable(f"a {kind} validator")
    elif kind not in _PRIMITIVE_TYPES:
        raise _Unlearnable(f"a {kind} schema")


_FIELDS: dict[type, dict] = {}


def _fields_of(model: type) -> dict:
    """For a model class: JSON key -> (field name, its core schema, "one"/"list"/"" nested model)."""
    known = _FIELDS.get(model)
    if known is not None:
        return known
    from fhir_core.fhirabstractmodel import FHIRAbstractModel

    if not issubclass(model, FHIRAbstractModel) or model.__init__ is not FHIRAbstractModel.__init__:
        raise _Unlearnable(f"{model.__name__} has its own __init__")
    if model.__pydantic_post_init__ is not None:
        raise _Unlearnable(f"{model.__name__} has a model_post_init")
    decorators = model.__pydantic_decorators__
    if decorators.validators or decorators.field_validators or decorators.root_validators:
        raise _Unlearnable(f"{model.__name__} has field validators")
    for found in decorators.model_validators.values():
        if getattr(found.func, "__qualname__", None) not in _KNOWN_VALIDATORS:
            raise _Unlearnable(f"{model.__name__} has an unknown model validator")
    schema = model.__pydantic_core_schema__
    while schema["type"] != "model":  # the after-validators wrap the model schema
        schema = schema["schema"]
    config = schema.get("config") or {}
    if not _CONFIG_KEYS.issuperset(config) or config.get("extra_fields_behavior") != "forbid":
        raise _Unlearnable(f"{model.__name__} has a config the fast path does not know")
    by_alias, by_name = config.get("validate_by_alias", True), config.get("validate_by_name", False)
    inner = schema["schema"]
    while inner["type"] != "model-fields":  # the before-validators wrap the fields
        inner = inner["schema"]
    fields: dict = {}
    for name, field in inner["fields"].items():
        alias = field.get("validation_alias")
        if alias is not None and not isinstance(alias, str):
            raise _Unlearnable(f"{model.__name__}.{name} has an alias path")
        unit = field["schema"]["schema"] if field["schema"]["type"] == "default" else field["schema"]
        entry = (name, unit, _element(unit))
        for json_key in {alias if by_alias else None, name if by_name or not alias else None} - {None}:
            if fields.get(json_key, entry)[0] != name:
                raise _Unlearnable(f"{model.__name__}: {json_key} names two fields")
            fields[json_key] = entry
    _FIELDS[model] = fields
    return fields


def _element(schema: dict) -> str:
    """"one" / "list" when the field holds a nested model / a list of them, validated by fhir_core."""
    while schema["type"] == "nullable":
        schema = schema["schema"]
    many = schema["type"] == "list"
    if many:
        schema = schema["items_schema"]
        while schema["type"] == "nullable":  # "_given": nulls line the extensions up with the values
            schema = schema["schema"]
    function = schema.get("function", {}).get("function") if schema["type"] == "function-wrap" else None
    if getattr(function, "__qualname__", None) != _FHIR_ELEMENT:
        return ""
    return "list" if many else "one"
