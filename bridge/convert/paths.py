"""Setting and reading values in FHIR JSON by the small path language the mapping files use.

``a.b``     nested element                 ``a[]``   append a new item to list a
``a[0].b``  item 0 of list a (made if absent)  ``a[].b`` append a new item and set its b
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

Setter = Callable[[dict, Any], None]
Getter = Callable[[dict], Any]

_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d*)\])?")


@lru_cache(maxsize=4096)
def compile_path(path: str) -> tuple[tuple[str, int | None, bool], ...]:
    """Steps of a path: (name, index or None, is_list)."""
    steps = []
    for part in path.split("."):
        m = _STEP.fullmatch(part)
        if not m:
            raise ValueError(f"bad path step {part!r} in {path!r}")
        name, index = m.group(1), m.group(2)
        if index is None:
            steps.append((name, None, False))
        else:
            steps.append((name, int(index) if index else None, True))
    return tuple(steps)


def set_path(target: dict, path: str, value: Any) -> None:
    """Put value at path; a scalar already present is not overwritten (first mapping wins)."""
    steps = compile_path(path)
    _put(_descend(target, steps[:-1]), steps[-1], value)


def _descend(node: Any, steps: tuple[tuple[str, int | None, bool], ...]) -> Any:
    """The element the last step of a path is put into, made as needed."""
    for name, index, is_list in steps:
        if not is_list:
            node = node.setdefault(name, {})
            continue
        items = node.setdefault(name, [])
        if index is None:  # append
            items.append({})
            node = items[-1]
        else:
            while len(items) <= index:
                items.append({})
            node = items[index]
    return node


def _put_element(node: dict, name: str, value: Any) -> None:
    """A value for one element: put if there is none, merged into a dict already there, else
    dropped (first mapping wins)."""
    if name not in node:
        node[name] = value
    else:
        old = node[name]
        if isinstance(old, dict) and isinstance(value, dict):
            merge_missing(old, value)


def _put(node: Any, step: tuple[str, int | None, bool], value: Any) -> None:
    name, index, is_list = step
    if not is_list:
        _put_element(node, name, value)
        return
    items = node.setdefault(name, [])
    if index is None:  # append
        items.append(value)
        return
    while len(items) <= index:
        items.append({})
    if items[index] == {}:
        items[index] = value
    elif isinstance(items[index], dict) and isinstance(value, dict):
        merge_missing(items[index], value)


def setter(path: str) -> Setter:
    """:func:`set_path` for one path, decided once: a mapping rule's path is fixed at load time."""
    steps = compile_path(path)
    inner, last = steps[:-1], steps[-1]
    name, index, is_list = last
    if not inner and not is_list:  # most paths are one element
        return lambda target, value: _put_element(target, name, value)
    if not inner and index is None:
        def append(target: dict, value: Any) -> None:
            if name in target:
                target[name].append(value)
            else:
                target[name] = [value]
        return append
    if len(inner) == 1 and inner[0][1:] == (0, True) and not is_list:  # coding[0].code, name[0].family
        outer = inner[0][0]

        def put_in_first(target: dict, value: Any) -> None:
            if outer not in target:
                target[outer] = [{name: value}]
                return
            items = target[outer]
            if not items:
                items.append({})
            _put_element(items[0], name, value)
        return put_in_first
    return lambda target, value: _put(_descend(target, inner), last, value)


def getter(path: str) -> Getter:
    """:func:`get_path` for one path, decided once."""
    steps = compile_path(path)
    if len(steps) == 1 and steps[0][1] is None:
        name = steps[0][0]
        return lambda source: source.get(name)
    return lambda source: get_path(source, path)


def get_path(source: dict, path: str) -> Any:
    """Value at path (first item of lists without an index), or None."""
    node: Any = source
    for name, index, _ in compile_path(path):
        if isinstance(node, list):
            node = node[0] if node else None
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
        if index is not None:
            node = node[index] if isinstance(node, list) and index < len(node) else None
    return node


def merge_missing(target: dict, extra: dict) -> None:
    """Add what target lacks from extra (nested dicts merged, lists extended with new items)."""
    for key, value in extra.items():
        if key not in target:
            target[key] = value
        elif isinstance(target[key], dict) and isinstance(value, dict):
            merge_missing(target[key], value)
        elif isinstance(target[key], list) and isinstance(value, list):
            target[key].extend(v for v in value if v not in target[key])


def prune(value: Any) -> Any:
    """Drop empty strings, dicts and lists (FHIR forbids empty elements).

    A value with no empty element in it is returned itself, not copied: values are built fresh
    for each message, and most have nothing to drop.
    """
    if isinstance(value, dict | list) and has_empty(value):
        return _pruned(value)
    return value


def has_empty(value: dict | list) -> bool:
    """Whether an empty string, dict, list or a None is anywhere in value."""
    for v in value.values() if isinstance(value, dict) else value:
        if v.__class__ is str:  # most leaves are text
            if not v:
                return True
        elif isinstance(v, dict | list):
            if not v or has_empty(v):
                return True
        elif v is None or v == "":
            return True
    return False


def _pruned(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(v, dict | list):  # only containers need a recursive call: most leaves are text
                v = _pruned(v)
                if v:
                    out[k] = v
            elif v is not None and v != "":
                out[k] = v
        return out
    if isinstance(value, list):
        items = []
        for v in value:
            if isinstance(v, dict | list):
                v = _pruned(v)
                if v:
                    items.append(v)
            elif v is not None and v != "":
                items.append(v)
        return items
    return value


def copy_json(value: Any) -> Any:
    """A copy of JSON-like data (dicts, lists, scalars): copy.deepcopy is several times slower."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def copier(value: Any) -> Callable[[], Any]:
    """:func:`copy_json` of one constant of the mappings, planned once: only its containers are copied
    when it is called (constants are copied for every use, and most are small and flat), by the
    compiled builder of its shape (:func:`builder`) when it has containers in it (a flat one is
    copied faster by ``dict()`` or ``list()``)."""
    if isinstance(value, dict | list) and any(
            isinstance(v, dict | list) for v in (value.values() if isinstance(value, dict) else value)):
        flat = flatten(value)
        if flat is not None:
            shape, leaves = flat
            return partial(builder(shape), *leaves) if leaves else builder(shape)
    return _planned(value)


def _planned(value: Any) -> Callable[[], Any]:
    """:func:`copier` without a builder: a closure per container."""
    if isinstance(value, dict):
        nested_items = tuple((k, _planned(v)) for k, v in value.items() if isinstance(v, dict | list))

        def copy_dict() -> dict:
            out = dict(value)
            for k, copy in nested_items:
                out[k] = copy()
            return out
        return copy_dict if nested_items else (lambda: dict(value))
    if isinstance(value, list):
        nested = tuple((i, _planned(v)) for i, v in enumerate(value) if isinstance(v, dict | list))

        def copy_list() -> list:
            out = list(value)
            for i, copy in nested:
                out[i] = copy()
            return out
        return copy_list if nested else (lambda: list(value))
    return lambda: value


# -- copies by compiled builders -----------------------------------------------------------------------
# A value kept by a field rule (values.Kept) is copied each time its text comes again, a constant of
# the mappings each time it is used.  Such a value is seen as its shape (the containers and their
# keys) and its leaves; each shape becomes one function that builds all the containers in one
# expression, so that a copy costs no call per container.  Shapes are few (a doctor's XCN, a bed's
# PL, a coding constant): each is compiled once.

Shape = tuple | None  # ("d", ((key, shape), ...)) | ("l", (shape, ...)) | None for a leaf
_BUILDERS: dict[Shape, Callable[..., Any]] = {}
_REMEMBERED_SHAPES = 1024  # compiled shapes kept; more, and they are forgotten
_LARGEST_SHAPE = 256  # leaves; a larger value is copied the general way (_planned)
_DEEPEST_SHAPE = 32  # containers in containers; deeper, the same (Python's parser refuses 200 levels)


class _Unfit(Exception):
    """A value whose shape is not compiled: a key that is not text, too many leaves, too deep."""


def flatten(value: Any) -> tuple[Shape, tuple] | None:
    """The shape of a JSON-like value and its leaves (anything but a dict or list: what
    :func:`copy_json` shares) in order; None for a value :func:`builder` does not take (a key that
    is not text, more than :data:`_LARGEST_SHAPE` leaves, more than :data:`_DEEPEST_SHAPE` levels)."""
    leaves: list = []
    try:
        shape = _shape(value, leaves, 0)
    except _Unfit:
        return None
    return shape, tuple(leaves)


def _shape(value: Any, leaves: list, depth: int) -> Shape:
    if depth > _DEEPEST_SHAPE:
        raise _Unfit
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if k.__class__ is not str:
                raise _Unfit
            if isinstance(v, dict | list):
                items.append((k, _shape(v, leaves, depth + 1)))
            else:
                leaves.append(v)
                items.append((k, None))
        shape: Shape = ("d", tuple(items))
    elif isinstance(value, list):
        shapes = []
        for v in value:
            if isinstance(v, dict | list):
                shapes.append(_shape(v, leaves, depth + 1))
            else:
                leaves.append(v)
                shapes.append(None)
        shape = ("l", tuple(shapes))
    else:
        leaves.append(value)
        return None
    if len(leaves) > _LARGEST_SHAPE:
        raise _Unfit
    return shape


def builder(shape: Shape) -> Callable[..., Any]:
    """The function making a fresh value of ``shape`` from its leaves, given as arguments in
    :func:`flatten`'s order: ``build(*leaves)`` equals ``copy_json`` of the value flattened."""
    known = _BUILDERS.get(shape)
    if known is None:
        count = 0

        def source(s: Shape) -> str:
            nonlocal count
            if s is None:
                count += 1
                return f"_{count - 1}"
            kind, parts = s
            if kind == "d":
                return "{" + ", ".join(f"{k!r}: {source(v)}" for k, v in parts) + "}"
            return "[" + ", ".join(source(v) for v in parts) + "]"

        body = source(shape)
        namespace: dict[str, Any] = {}
        # keys are written as repr() of text, the leaves are the arguments: no data becomes code
        exec(f"def build({', '.join(f'_{i}' for i in range(count))}):\n    return {body}\n", namespace)
        if len(_BUILDERS) >= _REMEMBERED_SHAPES:
            _BUILDERS.clear()
        known = _BUILDERS[shape] = namespace["build"]
    return known
