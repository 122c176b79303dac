"""Setting and reading values in FHIR JSON by the small path language the mapping files use.

``a.b``     nested element                 ``a[]``   append a new item to list a
``a[0].b``  item 0 of list a (made if absent)  ``a[].b`` append a new item and set its b
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

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
    node: Any = target
    for i, (name, index, is_list) in enumerate(steps):
        last = i == len(steps) - 1
        if not is_list:
            if last:
                if name not in node:
                    node[name] = value
                elif isinstance(node[name], dict) and isinstance(value, dict):
                    merge_missing(node[name], value)
                return
            node = node.setdefault(name, {})
            continue
        items = node.setdefault(name, [])
        if index is None:  # append
            if last:
                items.append(value)
                return
            items.append({})
            node = items[-1]
        else:
            while len(items) <= index:
                items.append({})
            if last:
                if items[index] == {}:
                    items[index] = value
                elif isinstance(items[index], dict) and isinstance(value, dict):
                    merge_missing(items[index], value)
                return
            node = items[index]


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
    """Drop empty strings, dicts and lists (FHIR forbids empty elements)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(v, dict | list):  # only containers need a recursive call: most leaves are text
                v = prune(v)
                if v:
                    out[k] = v
            elif v is not None and v != "":
                out[k] = v
        return out
    if isinstance(value, list):
        items = []
        for v in value:
            if isinstance(v, dict | list):
                v = prune(v)
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
