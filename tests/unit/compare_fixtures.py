"""The compare fixture builder (tests/data/compare/make_fixtures.py), loaded once for the tests that use it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

DATA = Path(__file__).resolve().parents[1] / "data" / "compare"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_fixture_builder", DATA / "make_fixtures.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FX = _load()
