"""A JSON Schema validator for the subset docs/schema/*.json uses, and the facts schema
generated from the dataclasses.

jsonschema is not a dependency of anything portaudit installs, and the schemas use a small,
fixed part of draft 2020-12: `type` (one or a list), `properties`, `required`,
`additionalProperties` (false or a schema), `items`, `minItems`, `maxItems`, `enum`, `const`,
`minimum`, `anyOf`, and `$ref` to `#/$defs/NAME`, `OTHER.json` or `OTHER.json#/$defs/NAME` in
the same directory. A keyword outside that subset is an error, so a schema cannot quietly ask
for a check this validator does not make.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Union

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schema"

KNOWN = {
    "$schema", "$id", "$defs", "title", "description", "type", "properties", "required",
    "additionalProperties", "items", "minItems", "maxItems", "enum", "const", "minimum",
    "anyOf", "$ref", "examples",
}  # fmt: skip

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text())
    return doc


class Validator:
    """Errors as `path: what`, all of them, so a failing test shows every mismatch at once."""

    def __init__(self, name: str) -> None:
        self.root_name = name
        self.errors: list[str] = []

    def _resolve(self, ref: str, doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        file, _, frag = ref.partition("#")
        target = load(file) if file else doc
        node = target
        for part in [p for p in frag.split("/") if p]:
            node = node[part]
        return node, target

    def check(self, value: Any, schema: dict[str, Any], doc: dict[str, Any], path: str) -> bool:
        unknown = set(schema) - KNOWN
        if unknown:
            raise ValueError(f"{path}: schema keyword(s) outside the subset: {sorted(unknown)}")
        before = len(self.errors)
        if "$ref" in schema:
            node, owner = self._resolve(schema["$ref"], doc)
            self.check(value, node, owner, path)
        if "anyOf" in schema:
            matched = False
            for option in schema["anyOf"]:
                trial = Validator(self.root_name)
                if trial.check(value, option, doc, path):
                    matched = True
                    break
            if not matched:
                self.errors.append(f"{path}: matches none of anyOf")
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_type(value, n) for n in names):
                self.errors.append(f"{path}: expected {'/'.join(names)}, got {value!r:.60}")
                return False
        if "const" in schema and value != schema["const"]:
            self.errors.append(f"{path}: expected {schema['const']!r}")
        if "enum" in schema and value not in schema["enum"]:
            self.errors.append(f"{path}: {value!r} not in {schema['enum']}")
        if "minimum" in schema and _is_type(value, "number") and value < schema["minimum"]:
            self.errors.append(f"{path}: {value} < {schema['minimum']}")
        if isinstance(value, dict):
            props = schema.get("properties", {})
            for key in schema.get("required", []):
                if key not in value:
                    self.errors.append(f"{path}: missing {key!r}")
            extra = schema.get("additionalProperties", True)
            for key, item in value.items():
                if key in props:
                    self.check(item, props[key], doc, f"{path}.{key}")
                elif extra is False:
                    self.errors.append(f"{path}: unexpected key {key!r}")
                elif isinstance(extra, dict):
                    self.check(item, extra, doc, f"{path}.{key}")
        if isinstance(value, list):
            if "minItems" in schema and len(value) < schema["minItems"]:
                self.errors.append(f"{path}: fewer than {schema['minItems']} items")
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                self.errors.append(f"{path}: more than {schema['maxItems']} items")
            if "items" in schema:
                for i, item in enumerate(value):
                    self.check(item, schema["items"], doc, f"{path}[{i}]")
        return len(self.errors) == before


def errors(value: Any, schema_name: str) -> list[str]:
    """Every way `value` fails docs/schema/`schema_name` ([] when it conforms)."""
    doc = load(schema_name)
    v = Validator(schema_name)
    v.check(value, doc, doc, "$")
    return v.errors


# --- the facts schema, generated from the dataclasses it describes ---------------------------


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    from auditor.facts.model import Unavailable

    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp)]
        return {"anyOf": [_type_schema(a, defs) for a in options]}
    if tp is type(None):
        return {"type": "null"}
    if origin is collections.abc.Sequence:
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0], defs)}
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _type_schema(args[0], defs)}
        item = _type_schema(args[0], defs)
        assert all(_type_schema(a, defs) == item for a in args), tp
        return {"type": "array", "items": item, "minItems": len(args), "maxItems": len(args)}
    if origin is dict:
        return {
            "type": "object",
            "additionalProperties": _type_schema(typing.get_args(tp)[1], defs),
        }
    if tp is Unavailable:
        defs["Unavailable"] = {
            "description": "A fact that could not be collected, and why.",
            "type": "object",
            "properties": {"unavailable": {"type": "string"}},
            "required": ["unavailable"],
            "additionalProperties": False,
        }
        return {"$ref": "#/$defs/Unavailable"}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # placeholder against recursion
            hints = typing.get_type_hints(tp)
            fields = dataclasses.fields(tp)
            defs[tp.__name__] = {
                "type": "object",
                "properties": {f.name: _type_schema(hints[f.name], defs) for f in fields},
                "required": [
                    f.name
                    for f in fields
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                ],
                "additionalProperties": False,
            }
        return {"$ref": f"#/$defs/{tp.__name__}"}
    simple = {int: "integer", float: "number", str: "string", bool: "boolean"}
    return {"type": simple[tp]}


def facts_schema() -> dict[str, Any]:
    """docs/schema/facts.json as the dataclasses of auditor/facts/model.py define it."""
    from auditor.facts.model import SCHEMA, Facts

    defs: dict[str, Any] = {}
    _type_schema(Facts, defs)
    top = defs.pop("Facts")
    top["properties"]["schema"] = {"const": SCHEMA}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "portaudit facts snapshot (`portaudit facts`, input of `audit --facts`)",
        "description": "Generated from auditor/facts/model.py by tests/jsonschema_lite.py; "
        "tests/test_schema.py fails when the two differ.",
        **top,
        "$defs": dict(sorted(defs.items())),
    }


def dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"
