"""OperatorCategorizer: module classes, aten ops and CUDA kernel names -> OperatorCategory.

The runtime form of the spec's TargetOperatorList: compiled lookups built from
the YAML file. ``OperatorCategorizer.to_record()`` gives the serialisable
``llm_perf_opt.data.analytic.TargetOperatorList`` (the data-model entity).

The mapping is data (``llm_perf_opt/resources/target_operators.yaml``); this
module loads and validates it and answers lookups. Rules (also written in the
YAML header):

- aten ops match EXACTLY after normalisation (``aten::mm``, ``aten.mm.default``,
  ``torch.ops.aten.mm.default`` and ``mm`` are all ``mm``);
- module classes match the class name exactly; module-path rules match
  contiguous dotted components of a module path (an ancestor) and win over class rules;
- kernel patterns are regular expressions tried in file order, first match wins;
- nothing matching returns ``OperatorCategory.UNCATEGORIZED`` (never a guess).

Usage::

    from llm_perf_opt.analytic.target_operators import categorize_op, categorize_kernel
    categorize_op("aten::addmm")                       # OperatorCategory.GEMM
    categorize_op("aten::mm", module_path="lm_head")   # OperatorCategory.LM_HEAD
    categorize_kernel("sm90_xmma_gemm_bf16bf16_...")   # OperatorCategory.GEMM
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from attrs import define, field

from llm_perf_opt.errors import UserError
from llm_perf_opt.vocab import OperatorCategory

RESOURCE_NAME = "target_operators.yaml"

#: Categories whose ops a module-path / module-class rule may re-label (a matmul in
#: ``lm_head`` is LM_HEAD, in ``mlp.experts`` MOE_EXPERTS). Norm/attention ops keep theirs.
_REFINABLE = frozenset({OperatorCategory.GEMM, OperatorCategory.ELEMENTWISE, OperatorCategory.MOE_ROUTER,
                        OperatorCategory.EMBEDDING})


class TargetOperatorError(UserError):
    """The OperatorCategorizer file is missing or malformed (message names file and field)."""


def normalize_op_name(op_name: str) -> str:
    """'aten::mm' / 'aten.mm.default' / 'torch.ops.aten.mm.default' / 'mm' -> 'mm'."""
    name = op_name.strip()
    for prefix in ("torch.ops.", "aten::", "aten."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if name.startswith("aten."):
        name = name[len("aten."):]
    # drop an overload suffix: mm.default, add.Tensor, softmax.int
    return name.split(".", 1)[0]


@define(kw_only=True, frozen=True)
class KernelPattern:
    """One ordered kernel-name rule: regex searched in the kernel name -> category."""

    pattern: str = field(metadata={"help": "Python regular expression (re.search)"})
    category: OperatorCategory = field(metadata={"help": "category of a matching kernel"})
    regex: re.Pattern[str] = field(metadata={"help": "compiled pattern"})


@define(kw_only=True, frozen=True)
class OperatorCategorizer:
    """The loaded mapping; build with :func:`load_target_operators`."""

    source: str = field(metadata={"help": "file the mapping was read from"})
    aten_ops: dict[str, OperatorCategory] = field(metadata={"help": "normalised aten op name -> category"})
    module_classes: dict[str, OperatorCategory] = field(metadata={"help": "module class name -> category"})
    module_paths: tuple[tuple[tuple[str, ...], OperatorCategory], ...] = field(
        metadata={"help": "(path components, category), longest first"})
    kernel_patterns: tuple[KernelPattern, ...] = field(metadata={"help": "ordered kernel rules"})

    def categorize_op(self, op_name: str, module_path: str | None = None,
                      module_class: str | None = None) -> OperatorCategory:
        """Category of an aten op; a module path/class context refines generic matmuls.

        ``categorize_op("aten::mm", module_path="model.lm_head")`` -> LM_HEAD.
        """
        base = self.aten_ops.get(normalize_op_name(op_name), OperatorCategory.UNCATEGORIZED)
        if base in _REFINABLE:
            ctx = None
            if module_path:
                ctx = self.categorize_module_path(module_path)
            if ctx is None and module_class:
                cls_cat = self.module_classes.get(module_class)
                if cls_cat in (OperatorCategory.MOE_EXPERTS, OperatorCategory.MOE_ROUTER, OperatorCategory.LM_HEAD):
                    ctx = cls_cat
            if ctx is not None:
                return ctx
        return base

    def categorize_module_path(self, module_path: str) -> OperatorCategory | None:
        """Category of a module path by an ancestor rule, or None when no path rule matches.

        A rule matches when its components appear contiguously in the path, so
        every submodule inherits it: 'model.layers.3.mlp.experts.7.down_proj'
        matches 'mlp.experts'; 'mlp.gate_proj' does not match 'mlp.gate'.
        """
        parts = tuple(p for p in module_path.split(".") if p)
        for suffix, cat in self.module_paths:
            n = len(suffix)
            for i in range(len(parts) - n + 1):
                if parts[i:i + n] == suffix:
                    return cat
        return None

    def categorize_module(self, class_name: str, module_path: str | None = None) -> OperatorCategory:
        """Category of a module by path rule first, then class name; UNCATEGORIZED if neither."""
        if module_path:
            cat = self.categorize_module_path(module_path)
            if cat is not None:
                return cat
        return self.module_classes.get(class_name, OperatorCategory.UNCATEGORIZED)

    def to_record(self) -> Any:
        """The list as the data model's ``llm_perf_opt.data.analytic.TargetOperatorList`` (aten ops as
        'aten::name', kernel patterns in order; module-path rules have no field there and are left out)."""
        from llm_perf_opt.data.analytic import TargetOperatorList as Record

        return Record(module_classes=dict(self.module_classes),
                      aten_ops={f"aten::{k}": v for k, v in self.aten_ops.items()},
                      kernel_patterns={r.pattern: r.category for r in self.kernel_patterns})

    def categorize_kernel(self, kernel_name: str) -> OperatorCategory:
        """Category of a CUDA kernel name: first matching pattern in file order, else UNCATEGORIZED."""
        for rule in self.kernel_patterns:
            if rule.regex.search(kernel_name):
                return rule.category
        return OperatorCategory.UNCATEGORIZED


def _category(value: Any, where: str) -> OperatorCategory:
    try:
        return OperatorCategory(value)
    except ValueError:
        known = ", ".join(c.value for c in OperatorCategory)
        raise TargetOperatorError(f"{where}: unknown category {value!r}; known: {known}") from None


def parse_target_operators(raw: Any, source: str) -> OperatorCategorizer:
    """Validate the YAML structure; TargetOperatorError names file and field."""
    if not isinstance(raw, dict):
        raise TargetOperatorError(f"{source}: top level must be a mapping")
    for key in ("aten_ops", "module_classes", "module_paths", "kernel_patterns"):
        if key not in raw:
            raise TargetOperatorError(f"{source}: missing field {key!r}")

    def section(key: str) -> dict[str, OperatorCategory]:
        out: dict[str, OperatorCategory] = {}
        block = raw[key]
        if not isinstance(block, dict):
            raise TargetOperatorError(f"{source}: {key} must map category -> list of names")
        for cat_name, names in block.items():
            cat = _category(cat_name, f"{source}: {key}")
            if not isinstance(names, list):
                raise TargetOperatorError(f"{source}: {key}.{cat_name} must be a list")
            for name in names:
                norm = normalize_op_name(str(name)) if key == "aten_ops" else str(name)
                if norm in out and out[norm] != cat:
                    raise TargetOperatorError(
                        f"{source}: {key}: {name!r} listed under both {out[norm].value} and {cat.value}")
                out[norm] = cat
        return out

    aten = section("aten_ops")
    classes = section("module_classes")
    paths_map = section("module_paths")
    paths = tuple(sorted(((tuple(p.split(".")), c) for p, c in paths_map.items()), key=lambda x: -len(x[0])))
    rules: list[KernelPattern] = []
    if not isinstance(raw["kernel_patterns"], list):
        raise TargetOperatorError(f"{source}: kernel_patterns must be a list of {{pattern, category}}")
    for i, item in enumerate(raw["kernel_patterns"]):
        if not isinstance(item, dict) or "pattern" not in item or "category" not in item:
            raise TargetOperatorError(f"{source}: kernel_patterns[{i}] needs 'pattern' and 'category'")
        try:
            regex = re.compile(str(item["pattern"]))
        except re.error as exc:
            raise TargetOperatorError(f"{source}: kernel_patterns[{i}] bad regex ({exc})") from exc
        rules.append(KernelPattern(pattern=str(item["pattern"]),
                                   category=_category(item["category"], f"{source}: kernel_patterns[{i}]"),
                                   regex=regex))
    return OperatorCategorizer(source=source, aten_ops=aten, module_classes=classes, module_paths=paths,
                              kernel_patterns=tuple(rules))


def load_target_operators(path: str | Path | None = None) -> OperatorCategorizer:
    """Load the packaged list (``path=None``) or a user file."""
    if path is None:
        return _packaged()
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError as exc:
        raise TargetOperatorError(f"{p}: file not found") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise TargetOperatorError(f"{p}: not readable YAML ({exc})") from exc
    return parse_target_operators(raw, str(p))


@lru_cache(maxsize=1)
def _packaged() -> OperatorCategorizer:
    text = resources.files("llm_perf_opt.resources").joinpath(RESOURCE_NAME).read_text()
    return parse_target_operators(yaml.safe_load(text), f"llm_perf_opt/resources/{RESOURCE_NAME}")


def categorize_op(op_name: str, module_path: str | None = None, module_class: str | None = None) -> OperatorCategory:
    """Category of an aten op name with the packaged list (see OperatorCategorizer.categorize_op)."""
    return _packaged().categorize_op(op_name, module_path=module_path, module_class=module_class)


def categorize_kernel(kernel_name: str) -> OperatorCategory:
    """Category of a CUDA kernel name with the packaged list (first matching pattern)."""
    return _packaged().categorize_kernel(kernel_name)


def categorize_module(class_name: str, module_path: str | None = None) -> OperatorCategory:
    """Category of a module (path rules first, then class) with the packaged list."""
    return _packaged().categorize_module(class_name, module_path)
