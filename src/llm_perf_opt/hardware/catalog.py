"""GPU catalogue: sourced dense peaks, bandwidth and capacity per GPU, exact lookup.

The packaged ``gpus.yaml`` beside this module holds the data in human units
(``bf16_dense_tflops``, ``memory_bandwidth_tb_s``, ``memory_gib``...), each number
with its source; :func:`load_catalog` validates it, converts to base units
(FLOP/s, bytes/s, bytes) and returns a :class:`GpuCatalog`.

Lookup is exact: a catalogue key, a declared alias or a driver name string,
compared after folding case and runs of whitespace only. There is no substring
matching and no default; an unknown name raises :class:`UnknownGpuError`, whose
message lists the known keys. A name declared by several entries (e.g.
``a100-sxm4`` for the 40GB and 80GB parts) is ambiguous for :meth:`GpuCatalog.get`
and is resolved by memory size in :meth:`GpuCatalog.resolve_device`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from attrs import define, field

from llm_perf_opt.errors import UserError
from llm_perf_opt.vocab import DType, parse_dtype

PACKAGED_CATALOG = Path(__file__).with_name("gpus.yaml")

TERA = 1e12
GIB = 2**30
MIB = 2**20

#: YAML number name -> dtype of a dense tensor-core peak (TFLOP/s).
TENSOR_PEAK_FIELDS: dict[str, DType] = {
    "bf16_dense_tflops": DType.BF16,
    "fp16_dense_tflops": DType.FP16,
    "fp8_dense_tflops": DType.FP8,
    "tf32_dense_tflops": DType.TF32,
}
#: Non-tensor FP32 peak (TFLOP/s).
CUDA_CORE_FP32_FIELD = "fp32_cuda_core_tflops"
FLOP_RATE_FIELDS: tuple[str, ...] = (*TENSOR_PEAK_FIELDS, CUDA_CORE_FP32_FIELD)
REQUIRED_NUMBERS: tuple[str, ...] = (
    "bf16_dense_tflops", "fp16_dense_tflops", "tf32_dense_tflops", CUDA_CORE_FP32_FIELD,
    "memory_bandwidth_tb_s", "memory_gib",
)
OPTIONAL_NUMBERS: tuple[str, ...] = ("fp8_dense_tflops", "sm_count", "l2_mib")
KNOWN_NUMBERS: tuple[str, ...] = REQUIRED_NUMBERS + OPTIONAL_NUMBERS
SOURCE_KINDS: tuple[str, ...] = ("datasheet", "whitepaper", "driver", "third_party", "user")
ACCUMULATE_PRECISIONS: tuple[str, ...] = ("fp32", "fp16")

#: A printed sparse figure may differ from 2x the dense one by this fraction (datasheet rounding).
SPARSE_RATIO_SLACK = 0.02
#: Reported total memory / catalogue capacity must lie in this range for a device to match an entry
#: (drivers reserve some memory: an 80 GiB H100 reports 81559 of 81920 MiB, a 24 GiB L4 about 22.5 GiB).
MEMORY_MATCH_RANGE: tuple[float, float] = (0.85, 1.03)

_ENTRY_KEYS = {"display_name", "architecture", "aliases", "driver_names", "driver_names_source",
               "tensor_accumulate", "notes", "numbers"}
_NUMBER_KEYS = {"value", "source", "table", "dense", "sparse_listed", "note"}
_SOURCE_KEYS = {"title", "kind", "url"}


class CatalogError(UserError):
    """A catalogue file that is missing, unreadable or breaks the schema (message names file and field)."""


class UnknownGpuError(UserError):
    """A GPU name that is no key, alias or driver name of the catalogue; the message lists the known keys."""


class AmbiguousGpuError(UserError):
    """A name declared by several entries (told apart by memory size); the message lists the candidates."""


def normalize_name(name: str) -> str:
    """Lookup form of a name: case-folded, whitespace runs collapsed to one space, ends stripped."""
    return " ".join(name.split()).casefold()


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


@define(kw_only=True, frozen=True)
class Source:
    """A document that catalogue numbers cite."""

    key: str = field(metadata={"help": "source id used by numbers in the YAML"})
    title: str = field(metadata={"help": "document title"})
    kind: str = field(metadata={"help": "datasheet, whitepaper, driver, third_party or user"})
    url: str | None = field(default=None, metadata={"help": "where the document can be found"})


@define(kw_only=True, frozen=True)
class NumberSource:
    """Provenance of one catalogue number."""

    source: Source = field(metadata={"help": "the cited document"})
    table: str = field(metadata={"help": "table / row of the document the number comes from"})
    dense: bool | None = field(default=None, metadata={
        "help": "FLOP rates: True = dense (no 2:4 sparsity); None for non-rate numbers"})
    sparse_listed: float | None = field(default=None, metadata={
        "help": "the with-sparsity figure the document prints (same unit), when it printed only that"})
    note: str | None = field(default=None, metadata={"help": "free-text remark"})

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        out: dict[str, Any] = {"source": self.source.key, "title": self.source.title, "kind": self.source.kind,
                               "table": self.table}
        if self.source.url:
            out["url"] = self.source.url
        if self.dense is not None:
            out["dense"] = self.dense
        if self.sparse_listed is not None:
            out["sparse_listed"] = self.sparse_listed
        if self.note:
            out["note"] = self.note
        return out


@define(kw_only=True, frozen=True, eq=False)
class GpuSpec:
    """One catalogued GPU, in base units (FLOP/s, bytes/s, bytes). All FLOP rates are dense."""

    key: str = field(metadata={"help": "catalogue key, e.g. 'h100-sxm'"})
    display_name: str = field(metadata={"help": "human-readable product name"})
    architecture: str = field(metadata={"help": "GPU architecture (ampere, ada, hopper, blackwell)"})
    aliases: tuple[str, ...] = field(converter=_str_tuple, metadata={"help": "user-facing short names"})
    driver_names: tuple[str, ...] = field(converter=_str_tuple, metadata={
        "help": "exact device names the driver reports (torch.cuda.get_device_name, NVML)"})
    tensor_flops_per_s: Mapping[DType, float] = field(metadata={
        "help": "dense tensor-core peak per dtype, FLOP/s (bf16, fp16, tf32, fp8 where present)"})
    cuda_core_fp32_flops_per_s: float = field(metadata={"help": "non-tensor FP32 peak, FLOP/s"})
    memory_bandwidth_bytes_per_s: float = field(metadata={"help": "device memory bandwidth, bytes/s"})
    memory_bytes: int = field(metadata={"help": "device memory capacity, bytes"})
    sm_count: int | None = field(default=None, metadata={"help": "streaming multiprocessors (None: unpublished)"})
    l2_bytes: int | None = field(default=None, metadata={"help": "L2 cache size, bytes (None: unpublished)"})
    tensor_accumulate: str = field(default="fp32", metadata={
        "help": "accumulate precision the tensor peaks assume (GeForce halves fp32-accumulate rates)"})
    dense: bool = field(default=True, metadata={"help": "True: every FLOP rate is a dense (non-sparse) peak"})
    sources: Mapping[str, NumberSource] = field(factory=dict, metadata={
        "help": "YAML number name (e.g. 'bf16_dense_tflops') -> its provenance"})
    driver_names_source: NumberSource | None = field(default=None, metadata={
        "help": "where the driver name strings come from"})
    notes: str = field(default="", metadata={"help": "caveats of this entry"})

    def peak_flops_per_s(self, dtype: DType | str) -> float:
        """Dense peak FLOP/s for ``dtype``: tensor cores for bf16/fp16/fp8/tf32, CUDA cores for fp32.

        Raises UserError for an unknown dtype name or a dtype the chip has no peak for (e.g. fp8 on A100).
        """
        if isinstance(dtype, str) and not isinstance(dtype, DType):
            try:
                dtype = parse_dtype(dtype)
            except ValueError as exc:
                raise UserError(str(exc)) from None
        if dtype is DType.FP32:
            return self.cuda_core_fp32_flops_per_s
        if dtype in self.tensor_flops_per_s:
            return self.tensor_flops_per_s[dtype]
        have = sorted(str(d) for d in self.tensor_flops_per_s) + ["fp32"]
        raise UserError(f"GPU {self.key!r} has no {dtype} peak (the chip lacks {dtype} tensor cores); "
                        f"catalogued dtypes: {', '.join(have)}")

    @property
    def dtypes(self) -> tuple[DType, ...]:
        """Dtypes with a peak on this GPU (tensor dtypes, then fp32)."""
        return (*self.tensor_flops_per_s.keys(), DType.FP32)

    def lookup_names(self) -> tuple[str, ...]:
        """Every name this entry answers to: key, aliases, driver names."""
        return (self.key, *self.aliases, *self.driver_names)

    def matches_memory(self, memory_total_bytes: int) -> bool:
        """True when a device reporting ``memory_total_bytes`` can be this GPU (see MEMORY_MATCH_RANGE)."""
        lo, hi = MEMORY_MATCH_RANGE
        return lo * self.memory_bytes <= memory_total_bytes <= hi * self.memory_bytes

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: base units, human units and per-number sources."""
        return {
            "key": self.key,
            "display_name": self.display_name,
            "architecture": self.architecture,
            "aliases": list(self.aliases),
            "driver_names": list(self.driver_names),
            "dense": self.dense,
            "tensor_accumulate": self.tensor_accumulate,
            "peak_flops_per_s": {str(d): self.peak_flops_per_s(d) for d in self.dtypes},
            "peak_tflops": {str(d): self.peak_flops_per_s(d) / TERA for d in self.dtypes},
            "memory_bandwidth_bytes_per_s": self.memory_bandwidth_bytes_per_s,
            "memory_bandwidth_tb_s": self.memory_bandwidth_bytes_per_s / TERA,
            "memory_bytes": self.memory_bytes,
            "memory_gib": self.memory_bytes / GIB,
            "sm_count": self.sm_count,
            "l2_bytes": self.l2_bytes,
            "l2_mib": None if self.l2_bytes is None else self.l2_bytes / MIB,
            "notes": self.notes,
            "sources": {name: src.as_dict() for name, src in self.sources.items()},
            "driver_names_source": None if self.driver_names_source is None else self.driver_names_source.as_dict(),
        }


class GpuCatalog:
    """A validated set of :class:`GpuSpec` with exact lookup by key, alias or driver name."""

    def __init__(self, specs: Iterable[GpuSpec], files: Iterable[Path] = ()) -> None:
        self._specs: dict[str, GpuSpec] = {}
        for spec in specs:
            if spec.key in self._specs:
                raise CatalogError(f"duplicate GPU key {spec.key!r}")
            self._specs[spec.key] = spec
        self.files: tuple[Path, ...] = tuple(files)
        self._names: dict[str, list[str]] = {}
        for spec in self._specs.values():
            for name in dict.fromkeys(normalize_name(n) for n in spec.lookup_names()):
                self._names.setdefault(name, []).append(spec.key)
        for name, keys in self._names.items():
            if len(keys) > 1:
                self._check_shared_name(name, keys)

    def _check_shared_name(self, name: str, keys: list[str]) -> None:
        """A name may be shared only by entries whose memory sizes cannot be confused, and never be a key."""
        if name in {normalize_name(k) for k in self._specs}:
            raise CatalogError(f"name {name!r} is the key of one entry and a name of another ({', '.join(keys)})")
        specs = [self._specs[k] for k in keys]
        for i, a in enumerate(specs):
            for b in specs[i + 1:]:
                if a.matches_memory(b.memory_bytes) or b.matches_memory(a.memory_bytes):
                    raise CatalogError(
                        f"name {name!r} is declared by {a.key!r} and {b.key!r}, whose memory sizes "
                        f"({a.memory_bytes / GIB:g} and {b.memory_bytes / GIB:g} GiB) cannot tell them apart")

    def keys(self) -> list[str]:
        """Catalogue keys in file order."""
        return list(self._specs)

    def specs(self) -> list[GpuSpec]:
        """All entries in file order."""
        return list(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_name(name) in self._names

    def __len__(self) -> int:
        return len(self._specs)

    def __iter__(self) -> Iterator[str]:
        """Iterate over catalogue keys."""
        return iter(self._specs)

    def candidates(self, name: str) -> list[GpuSpec]:
        """Entries answering to ``name`` exactly (after case/whitespace folding); empty when unknown."""
        return [self._specs[k] for k in self._names.get(normalize_name(name), [])]

    def _unknown(self, name: str) -> UnknownGpuError:
        return UnknownGpuError(f"unknown GPU {name!r}; known keys: {', '.join(self.keys())} "
                               "(aliases and driver names: `llm-perf-opt hw list`)")

    def get(self, name_or_alias: str) -> GpuSpec:
        """The entry whose key, alias or driver name equals ``name_or_alias`` (case/whitespace folded).

        Raises UnknownGpuError (listing the known keys) or AmbiguousGpuError (listing the candidates).
        """
        found = self.candidates(name_or_alias)
        if not found:
            raise self._unknown(name_or_alias)
        if len(found) > 1:
            options = ", ".join(f"{s.key} ({s.memory_bytes / GIB:g} GiB)" for s in found)
            raise AmbiguousGpuError(f"GPU name {name_or_alias!r} fits several entries: {options}; "
                                    "give the key, or the memory size (resolve_device)")
        return found[0]

    def resolve_device(self, name: str, memory_total_bytes: int | None) -> GpuSpec:
        """The entry of a device the driver reports as ``name`` with ``memory_total_bytes`` of memory.

        The name must match exactly; among entries sharing it, the one whose capacity fits the
        reported total wins. A reported total that fits no candidate is an error (e.g. a MIG slice
        or a variant the catalogue lacks) rather than a silent pick. ``memory_total_bytes=None``
        behaves like :meth:`get`.
        """
        found = self.candidates(name)
        if not found:
            raise self._unknown(name)
        if memory_total_bytes is None:
            return self.get(name)
        fitting = [s for s in found if s.matches_memory(memory_total_bytes)]
        if len(fitting) == 1:
            return fitting[0]
        options = ", ".join(f"{s.key} ({s.memory_bytes / GIB:g} GiB)" for s in found)
        raise UnknownGpuError(f"device {name!r} reports {memory_total_bytes / GIB:.1f} GiB of memory, which fits "
                              f"none of the catalogued {options}; add an entry with a user catalogue (--catalog)")


# ---------------------------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"{path}: catalogue file not found") from None
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read catalogue file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a mapping with 'sources' and 'gpus' at the top level")
    unknown = set(data) - {"sources", "gpus"}
    if unknown:
        raise CatalogError(f"{path}: unknown top-level field(s) {sorted(unknown)}; expected 'sources', 'gpus'")
    return data


def _parse_sources(path: Path, raw: Any) -> dict[str, Source]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: 'sources' must be a mapping of source id -> {{title, kind, url}}")
    out: dict[str, Source] = {}
    for key, body in raw.items():
        where = f"{path}: sources.{key}"
        if not isinstance(body, dict):
            raise CatalogError(f"{where}: expected a mapping with title and kind")
        extra = set(body) - _SOURCE_KEYS
        if extra:
            raise CatalogError(f"{where}: unknown field(s) {sorted(extra)}")
        title, kind = body.get("title"), body.get("kind")
        if not isinstance(title, str) or not title.strip():
            raise CatalogError(f"{where}.title: a non-empty string is required")
        if kind not in SOURCE_KINDS:
            raise CatalogError(f"{where}.kind: {kind!r} is not one of {', '.join(SOURCE_KINDS)}")
        url = body.get("url")
        if url is not None and not isinstance(url, str):
            raise CatalogError(f"{where}.url: expected a string")
        out[str(key)] = Source(key=str(key), title=title.strip(), kind=kind, url=url)
    return out


def _provenance(where: str, body: Mapping[str, Any], sources: Mapping[str, Source]) -> tuple[Source, str]:
    src_key, table = body.get("source"), body.get("table")
    if not isinstance(src_key, str) or src_key not in sources:
        raise CatalogError(f"{where}.source: {src_key!r} is not a declared source "
                           f"(declared: {', '.join(sorted(sources))})")
    if not isinstance(table, str) or not table.strip():
        raise CatalogError(f"{where}.table: name the table/row of the source the number comes from")
    return sources[src_key], table.strip()


def _parse_number(where: str, name: str, body: Any, sources: Mapping[str, Source]) -> tuple[float, NumberSource]:
    if not isinstance(body, dict):
        raise CatalogError(f"{where}: expected a mapping {{value, source, table, ...}}")
    extra = set(body) - _NUMBER_KEYS
    if extra:
        raise CatalogError(f"{where}: unknown field(s) {sorted(extra)}")
    value = body.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise CatalogError(f"{where}.value: expected a positive number, got {value!r}")
    source, table = _provenance(where, body, sources)
    dense = body.get("dense")
    sparse = body.get("sparse_listed")
    if name in FLOP_RATE_FIELDS:
        if dense is not True:
            raise CatalogError(f"{where}.dense: FLOP rates must be dense peaks and say so (dense: true); "
                               "halve a 2:4-sparse datasheet figure and record it under sparse_listed")
        if sparse is not None:
            if isinstance(sparse, bool) or not isinstance(sparse, int | float) or sparse <= 0:
                raise CatalogError(f"{where}.sparse_listed: expected a positive number, got {sparse!r}")
            ratio = sparse / (2.0 * value)
            if abs(ratio - 1.0) > SPARSE_RATIO_SLACK:
                raise CatalogError(f"{where}: value {value} is not half of sparse_listed {sparse} "
                                   "(dense = sparse / 2)")
    elif dense is not None or sparse is not None:
        raise CatalogError(f"{where}: 'dense'/'sparse_listed' apply to FLOP rates only")
    if name in ("sm_count",) and not float(value).is_integer():
        raise CatalogError(f"{where}.value: expected an integer, got {value!r}")
    note = body.get("note")
    return float(value), NumberSource(source=source, table=table, dense=dense, note=note,
                                      sparse_listed=None if sparse is None else float(sparse))


def _str_list(where: str, raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str | int) and str(x).strip() for x in raw):
        raise CatalogError(f"{where}: expected a list of non-empty strings")
    return tuple(str(x).strip() for x in raw)


def _parse_entry(path: Path, key: str, body: Any, sources: Mapping[str, Source]) -> GpuSpec:
    where = f"{path}: gpus.{key}"
    if not isinstance(body, dict):
        raise CatalogError(f"{where}: expected a mapping")
    extra = set(body) - _ENTRY_KEYS
    if extra:
        raise CatalogError(f"{where}: unknown field(s) {sorted(extra)}")
    for req in ("display_name", "architecture", "numbers"):
        if req not in body:
            raise CatalogError(f"{where}.{req}: required field missing")
    numbers_raw = body["numbers"]
    if not isinstance(numbers_raw, dict):
        raise CatalogError(f"{where}.numbers: expected a mapping of number name -> {{value, source, table}}")
    unknown = set(numbers_raw) - set(KNOWN_NUMBERS)
    if unknown:
        raise CatalogError(f"{where}.numbers: unknown number(s) {sorted(unknown)}; known: {', '.join(KNOWN_NUMBERS)}")
    missing = [n for n in REQUIRED_NUMBERS if n not in numbers_raw]
    if missing:
        raise CatalogError(f"{where}.numbers: required number(s) missing: {', '.join(missing)}")
    values: dict[str, float] = {}
    provenance: dict[str, NumberSource] = {}
    for name, nb in numbers_raw.items():
        values[name], provenance[name] = _parse_number(f"{where}.numbers.{name}", name, nb, sources)
    accumulate = body.get("tensor_accumulate", "fp32")
    if accumulate not in ACCUMULATE_PRECISIONS:
        raise CatalogError(f"{where}.tensor_accumulate: {accumulate!r} is not one of {', '.join(ACCUMULATE_PRECISIONS)}")
    driver_names = _str_list(f"{where}.driver_names", body.get("driver_names"))
    dn_source = None
    if driver_names:
        dn_raw = body.get("driver_names_source")
        if not isinstance(dn_raw, dict) or set(dn_raw) - {"source", "table"}:
            raise CatalogError(f"{where}.driver_names_source: expected {{source, table}} citing the driver names")
        src, table = _provenance(f"{where}.driver_names_source", dn_raw, sources)
        dn_source = NumberSource(source=src, table=table)
    for text_field in ("display_name", "architecture"):
        if not isinstance(body[text_field], str) or not body[text_field].strip():
            raise CatalogError(f"{where}.{text_field}: a non-empty string is required")
    tensor = {dt: values[name] * TERA for name, dt in TENSOR_PEAK_FIELDS.items() if name in values}
    return GpuSpec(
        key=key,
        display_name=body["display_name"].strip(),
        architecture=body["architecture"].strip(),
        aliases=_str_list(f"{where}.aliases", body.get("aliases")),
        driver_names=driver_names,
        tensor_flops_per_s=tensor,
        cuda_core_fp32_flops_per_s=values[CUDA_CORE_FP32_FIELD] * TERA,
        memory_bandwidth_bytes_per_s=values["memory_bandwidth_tb_s"] * TERA,
        memory_bytes=round(values["memory_gib"] * GIB),
        sm_count=int(values["sm_count"]) if "sm_count" in values else None,
        l2_bytes=round(values["l2_mib"] * MIB) if "l2_mib" in values else None,
        tensor_accumulate=accumulate,
        dense=True,
        sources=provenance,
        driver_names_source=dn_source,
        notes=" ".join(str(body.get("notes") or "").split()),
    )


def _parse_file(path: Path, inherited_sources: Mapping[str, Source]) -> tuple[dict[str, Source], list[GpuSpec]]:
    data = _read_yaml(path)
    sources = dict(inherited_sources)
    sources.update(_parse_sources(path, data.get("sources")))
    gpus_raw = data.get("gpus")
    if not isinstance(gpus_raw, dict) or not gpus_raw:
        raise CatalogError(f"{path}: 'gpus' must be a non-empty mapping of key -> entry")
    specs = []
    for key, body in gpus_raw.items():
        k = str(key)
        if k != k.strip() or not k or any(c.isspace() for c in k):
            raise CatalogError(f"{path}: gpus key {key!r} must be a single word without spaces")
        specs.append(_parse_entry(path, k, body, sources))
    return sources, specs


def load_catalog(extra: Path | None = None) -> GpuCatalog:
    """Load the packaged catalogue, then ``extra`` (a user YAML in the same schema) on top.

    Entries of ``extra`` add new keys or replace the packaged entry with the same key whole;
    its sources may cite packaged source ids. Raises CatalogError naming file and field.
    """
    sources, specs = _parse_file(PACKAGED_CATALOG, {})
    merged: dict[str, GpuSpec] = {s.key: s for s in specs}
    files = [PACKAGED_CATALOG]
    if extra is not None:
        extra = Path(extra)
        _, user_specs = _parse_file(extra, sources)
        for spec in user_specs:
            merged[spec.key] = spec
        files.append(extra)
    try:
        return GpuCatalog(merged.values(), files=files)
    except CatalogError as exc:
        where = f"{extra}: " if extra is not None else ""
        raise CatalogError(f"{where}{exc}") from None
