"""specs/*/contracts/openapi.yaml and llm_perf_opt.contracts agree, both ways.

Every schema is an attrs contract class and every contract class has a schema;
property names, types (enums with their values, nullability, arrays, maps,
references) and required fields match.
"""

from __future__ import annotations

import copy
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from llm_perf_opt.contracts import CONTRACT_CLASSES
from llm_perf_opt.contracts import models as contract_models

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = sorted(ROOT.glob("specs/*/contracts/openapi.yaml"))
SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _load_schemas() -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = {}
    for path in SPEC_FILES:
        doc = yaml.safe_load(path.read_text())
        assert doc["openapi"].startswith("3.1"), path
        for name, schema in doc["components"]["schemas"].items():
            assert name not in schemas, f"{name} defined in two spec files"
            schemas[name] = schema
    return schemas


def _type_problems(schema: dict[str, Any], annotation: Any, where: str) -> list[str]:
    """Differences between one property schema and one Python annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        assert len(inner) == 1, f"{where}: only Optional unions are supported"
        if "anyOf" in schema:
            options = schema["anyOf"]
            if {"type": "null"} not in options or len(options) != 2:
                return [f"{where}: anyOf must be [X, null]"]
            other = next(o for o in options if o != {"type": "null"})
            return _type_problems(other, inner[0], where)
        declared = schema.get("type")
        if not isinstance(declared, list) or "null" not in declared:
            return [f"{where}: nullable in Python but not in the schema"]
        rest = [t for t in declared if t != "null"]
        reduced = {**schema, "type": rest[0] if len(rest) == 1 else rest}
        if "enum" in schema:
            if None not in schema["enum"]:
                return [f"{where}: nullable enum must list null"]
            reduced["enum"] = [v for v in schema["enum"] if v is not None]
        return _type_problems(reduced, inner[0], where)
    if isinstance(schema.get("type"), list) or "anyOf" in schema:
        return [f"{where}: nullable in the schema but not in Python"]
    if origin is list:
        if schema.get("type") != "array":
            return [f"{where}: expected array, schema says {schema.get('type')}"]
        return _type_problems(schema.get("items", {}), args[0], f"{where}[]")
    if origin is dict:
        if schema.get("type") != "object" or "additionalProperties" not in schema:
            return [f"{where}: expected a map (object with additionalProperties)"]
        problems = _type_problems(schema["additionalProperties"], args[1], f"{where}{{}}")
        key = args[0]
        if isinstance(key, type) and issubclass(key, Enum):
            names = schema.get("propertyNames", {}).get("enum")
            if names != [m.value for m in key]:
                problems.append(f"{where}: propertyNames must enumerate {key.__name__}")
        return problems
    if attrs.has(annotation):
        expected = f"#/components/schemas/{annotation.__name__}"
        return [] if schema.get("$ref") == expected else [f"{where}: expected $ref {expected}"]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        problems = [] if schema.get("type") == "string" else [f"{where}: enum must be a string"]
        if schema.get("enum") != [m.value for m in annotation]:
            problems.append(f"{where}: enum values differ from {annotation.__name__}")
        return problems
    if origin is typing.Literal:
        if schema.get("type") != "string" or schema.get("enum") != list(args):
            return [f"{where}: expected a string enum {list(args)}, schema says {schema.get('type')} "
                    f"{schema.get('enum')}"]
        return []
    if annotation in SCALARS:
        return [] if schema.get("type") == SCALARS[annotation] and "enum" not in schema else [
            f"{where}: expected {SCALARS[annotation]}, schema says {schema.get('type')}"]
    return [f"{where}: unsupported annotation {annotation!r}"]


def schema_problems(name: str, schema: dict[str, Any], cls: type) -> list[str]:
    """Every disagreement between one component schema and one attrs class."""
    hints = typing.get_type_hints(cls, vars(contract_models))
    fields = {f.name: f for f in attrs.fields(cls)}
    props = schema.get("properties", {})
    problems = [f"{name}.{p}: in the schema, not in the class" for p in sorted(set(props) - set(fields))]
    problems += [f"{name}.{p}: in the class, not in the schema" for p in sorted(set(fields) - set(props))]
    required = {n for n, f in fields.items() if f.default is attrs.NOTHING}
    if set(schema.get("required", [])) != required:
        problems.append(f"{name}: required {sorted(schema.get('required', []))} != class {sorted(required)}")
    if schema.get("type") != "object" or schema.get("additionalProperties") is not False:
        problems.append(f"{name}: must be a closed object (additionalProperties: false)")
    for prop in sorted(set(props) & set(fields)):
        if not str(props[prop].get("description", "")).strip():
            problems.append(f"{name}.{prop}: no description")
        problems += _type_problems(props[prop], hints[prop], f"{name}.{prop}")
    return problems


def test_spec_files_exist() -> None:
    assert [p.parent.parent.name for p in SPEC_FILES] == ["001-stage1-profiling", "002-deepseek-ocr-analytic"]


def test_every_schema_is_a_class_and_every_class_a_schema() -> None:
    schemas = _load_schemas()
    assert sorted(schemas) == sorted(CONTRACT_CLASSES)
    public = {n for n, obj in vars(contract_models).items()
              if isinstance(obj, type) and attrs.has(obj) and obj.__module__ == contract_models.__name__}
    assert public == set(CONTRACT_CLASSES)


@pytest.mark.parametrize("name", sorted(CONTRACT_CLASSES))
def test_schema_matches_class(name: str) -> None:
    schemas = _load_schemas()
    assert schema_problems(name, schemas[name], CONTRACT_CLASSES[name]) == []


def test_references_resolve_within_each_document() -> None:
    for path in SPEC_FILES:
        text = path.read_text()
        doc = yaml.safe_load(text)
        names = set(doc["components"]["schemas"]) | {f"responses/{r}" for r in doc["components"].get("responses", {})}
        for line in text.splitlines():
            if "$ref:" in line:
                target = line.split("#/components/")[1].strip().strip("'\"")
                target = target.removeprefix("schemas/")
                assert target in names, f"{path}: dangling $ref {target}"


def test_checker_detects_drift() -> None:
    schemas = _load_schemas()
    name = "DeepSeekOCRAnalyticReportSummary"
    cls = CONTRACT_CLASSES[name]
    dropped = copy.deepcopy(schemas[name])
    del dropped["properties"]["total_io_tb"]
    assert any("total_io_tb: in the class" in p for p in schema_problems(name, dropped, cls))
    retyped = copy.deepcopy(schemas[name])
    retyped["properties"]["max_batch_size"]["type"] = ["number", "null"]
    assert any("max_batch_size" in p for p in schema_problems(name, retyped, cls))
    not_nullable = copy.deepcopy(schemas[name])
    not_nullable["properties"]["measured_total_time_ms"]["type"] = "number"
    assert any("nullable in Python" in p for p in schema_problems(name, not_nullable, cls))
    wrong_required = copy.deepcopy(schemas[name])
    wrong_required["required"] = [*wrong_required["required"], "top_modules"]
    assert any("required" in p for p in schema_problems(name, wrong_required, cls))
    enum_drift = copy.deepcopy(schemas["WorkloadProfileView"])
    enum_drift["properties"]["dtype"]["enum"] = ["bf16", "fp16"]
    assert any("enum values" in p for p in schema_problems("WorkloadProfileView", enum_drift,
                                                          CONTRACT_CLASSES["WorkloadProfileView"]))
    extra = copy.deepcopy(schemas["StageTotalsView"])
    extra["properties"]["flops_gflops"] = {"type": "number", "description": "x"}
    assert any("in the schema, not in the class" in p
               for p in schema_problems("StageTotalsView", extra, CONTRACT_CLASSES["StageTotalsView"]))
