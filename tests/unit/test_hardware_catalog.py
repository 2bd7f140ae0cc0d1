"""GPU catalogue: schema of the packaged YAML, exact lookup, memory disambiguation, user overrides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.catalog import (
    CUDA_CORE_FP32_FIELD,
    FLOP_RATE_FIELDS,
    GIB,
    KNOWN_NUMBERS,
    PACKAGED_CATALOG,
    REQUIRED_NUMBERS,
    SOURCE_KINDS,
    AmbiguousGpuError,
    CatalogError,
    UnknownGpuError,
    load_catalog,
    normalize_name,
)
from llm_perf_opt.vocab import DType

DATA = Path(__file__).resolve().parents[1] / "data"

#: The GPUs issue 4 requires, by catalogue key.
REQUIRED_KEYS = [
    "h100-sxm", "h100-pcie", "h100-nvl", "h200", "h20", "b200",
    "a100-sxm4-40gb", "a100-sxm4-80gb", "a100-pcie-40gb", "a100-pcie-80gb",
    "a10", "l4", "l40s", "rtx-4090", "rtx-5090", "rtx-6000-ada",
]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(PACKAGED_CATALOG.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


# ------------------------------------------------------------------------------------- schema of the file


def test_every_number_has_source_table_and_flop_rates_are_dense(raw: dict) -> None:
    sources = raw["sources"]
    for key, src in sources.items():
        assert src["kind"] in SOURCE_KINDS, key
        assert src["title"].strip(), key
    for key, entry in raw["gpus"].items():
        numbers = entry["numbers"]
        assert set(REQUIRED_NUMBERS) <= set(numbers), key
        assert set(numbers) <= set(KNOWN_NUMBERS), key
        for name, number in numbers.items():
            where = f"{key}.{name}"
            assert isinstance(number["value"], int | float) and number["value"] > 0, where
            assert number["source"] in sources, where
            assert number["table"].strip(), where
            if name in FLOP_RATE_FIELDS:
                assert number["dense"] is True, where
                if "sparse_listed" in number:
                    assert number["sparse_listed"] / 2 == pytest.approx(number["value"], rel=0.02), where
            else:
                assert "dense" not in number and "sparse_listed" not in number, where
        if entry.get("driver_names"):
            assert entry["driver_names_source"]["source"] in sources, key


def test_required_gpus_present(catalog) -> None:
    assert set(REQUIRED_KEYS) <= set(catalog.keys())


def test_h100_matches_the_reference_datasheet_figures(catalog) -> None:
    """tests/data/gpu-measurements.md quotes the H100 SXM datasheet: dense bf16 989 TFLOP/s, HBM3 3.35 TB/s."""
    text = (DATA / "gpu-measurements.md").read_text(encoding="utf-8")
    bf16 = float(re.search(r"datasheet dense bf16:\s*([\d.]+)\s*TFLOP/s", text).group(1))
    bandwidth = float(re.search(r"datasheet HBM3:\s*([\d.]+)\s*TB/s", text).group(1))
    sms = int(re.search(r"(\d+) SMs", text).group(1))
    driver_name = re.search(r"one (NVIDIA H100 80GB HBM3)", text).group(1)
    spec = catalog.get(driver_name)
    assert spec.key == "h100-sxm"
    assert spec.peak_flops_per_s(DType.BF16) / 1e12 == pytest.approx(bf16, abs=1.0)
    assert spec.memory_bandwidth_bytes_per_s / 1e12 == pytest.approx(bandwidth)
    assert spec.sm_count == sms


def test_units_converted_to_base_units(catalog) -> None:
    a100 = catalog.get("a100-sxm4-80gb")
    assert a100.peak_flops_per_s("bf16") == 312e12
    assert a100.peak_flops_per_s(DType.TF32) == 156e12
    assert a100.peak_flops_per_s("float32") == 19.5e12  # CUDA-core fp32
    assert a100.memory_bandwidth_bytes_per_s == pytest.approx(2.039e12)
    assert a100.memory_bytes == 80 * GIB
    assert a100.l2_bytes == 40 * 2**20
    assert a100.dense is True


def test_missing_dtype_is_a_user_error(catalog) -> None:
    with pytest.raises(UserError, match="no fp8 peak"):
        catalog.get("a100-sxm4-40gb").peak_flops_per_s("fp8")
    with pytest.raises(UserError, match="unknown dtype"):
        catalog.get("h100-sxm").peak_flops_per_s("int4")
    assert catalog.get("h100-sxm").peak_flops_per_s("fp8") == 1979e12


def test_geforce_entries_state_fp32_accumulate(catalog) -> None:
    for key in ("rtx-4090", "rtx-5090"):
        spec = catalog.get(key)
        assert spec.tensor_accumulate == "fp32"
        assert "accumulate" in spec.notes.lower()
        # FP32-accumulate GeForce rate: bf16 tensor peak is 2x the CUDA-core fp32 peak, not 4x.
        assert spec.peak_flops_per_s("bf16") == pytest.approx(2 * spec.cuda_core_fp32_flops_per_s, rel=0.01)


# ------------------------------------------------------------------------------------------------ lookup


def test_every_name_resolves(catalog, raw: dict) -> None:
    for key, entry in raw["gpus"].items():
        spec = catalog.get(key)
        assert spec.key == key
        for name in [*entry.get("aliases", []), *entry.get("driver_names", [])]:
            candidates = catalog.candidates(str(name))
            assert spec in candidates, (key, name)
            if len(candidates) == 1:
                assert catalog.get(str(name)) is spec
                assert catalog.get(f"  {str(name).upper()}  ") is spec  # case/whitespace folding only
            else:
                with pytest.raises(AmbiguousGpuError):
                    catalog.get(str(name))
            assert catalog.resolve_device(str(name), spec.memory_bytes) is spec, (key, name)


def test_driver_names_resolve_exactly(catalog) -> None:
    assert catalog.get("NVIDIA H100 80GB HBM3").key == "h100-sxm"
    assert catalog.get("nvidia  h100 80gb hbm3").key == "h100-sxm"
    assert catalog.get("NVIDIA H100 PCIe").key == "h100-pcie"
    assert catalog.get("NVIDIA A100-SXM4-40GB").key == "a100-sxm4-40gb"
    assert catalog.get("NVIDIA GeForce RTX 4090").key == "rtx-4090"


def test_no_substring_matching(catalog) -> None:
    for name in ("H100", "NVIDIA H100", "A100", "NVIDIA H100 80GB", "RTX", "h100-sxm-extra"):
        with pytest.raises(UnknownGpuError) as info:
            catalog.get(name)
        message = str(info.value)
        assert "\n" not in message
        for key in catalog:
            assert key in message


def test_a100_40gb_and_80gb_told_apart_by_memory(catalog) -> None:
    with pytest.raises(AmbiguousGpuError, match="a100-sxm4-40gb.*a100-sxm4-80gb"):
        catalog.get("a100-sxm4")
    # totals as torch reports them: a little under the nominal capacity
    assert catalog.resolve_device("a100-sxm4", int(39.4 * GIB)).key == "a100-sxm4-40gb"
    assert catalog.resolve_device("A100-SXM4", int(79.2 * GIB)).key == "a100-sxm4-80gb"
    assert catalog.resolve_device("a100-pcie", int(79.2 * GIB)).key == "a100-pcie-80gb"
    assert catalog.resolve_device("a100-pcie", int(39.4 * GIB)).key == "a100-pcie-40gb"
    # a driver name whose capacity contradicts the memory is refused, not matched to a look-alike
    with pytest.raises(UnknownGpuError, match="fits none"):
        catalog.resolve_device("NVIDIA A100-SXM4-40GB", int(79.2 * GIB))
    with pytest.raises(UnknownGpuError, match="fits none"):
        catalog.resolve_device("NVIDIA H100 80GB HBM3", 10 * GIB)  # e.g. a MIG slice


def test_normalize_name() -> None:
    assert normalize_name("  NVIDIA   H100\t80GB HBM3 ") == "nvidia h100 80gb hbm3"


# ----------------------------------------------------------------------------------------- user catalogue


USER_YAML = """
sources:
  my-lab:
    title: Our lab's acceptance test sheet
    kind: user
gpus:
  h100-sxm:
    display_name: H100 SXM (power-capped)
    architecture: hopper
    aliases: [h100-capped]
    driver_names: [NVIDIA H100 80GB HBM3]
    driver_names_source: {source: nvidia-driver-readme, table: "Compatible GPUs"}
    numbers:
      bf16_dense_tflops: {value: 700, dense: true, source: my-lab, table: "bf16 row"}
      fp16_dense_tflops: {value: 700, dense: true, source: my-lab, table: "fp16 row"}
      tf32_dense_tflops: {value: 350, dense: true, source: my-lab, table: "tf32 row"}
      fp32_cuda_core_tflops: {value: 50, dense: true, source: my-lab, table: "fp32 row"}
      memory_bandwidth_tb_s: {value: 3.35, source: nvidia-h100-datasheet, table: "H100 SXM bandwidth"}
      memory_gib: {value: 80, source: nvidia-h100-datasheet, table: "H100 SXM memory"}
  my-gpu:
    display_name: Prototype accelerator
    architecture: custom
    aliases: [proto]
    numbers:
      bf16_dense_tflops: {value: 100, sparse_listed: 200, dense: true, source: my-lab, table: "bf16 row"}
      fp16_dense_tflops: {value: 100, dense: true, source: my-lab, table: "fp16 row"}
      tf32_dense_tflops: {value: 50, dense: true, source: my-lab, table: "tf32 row"}
      fp32_cuda_core_tflops: {value: 20, dense: true, source: my-lab, table: "fp32 row"}
      memory_bandwidth_tb_s: {value: 1.0, source: my-lab, table: "bandwidth row"}
      memory_gib: {value: 32, source: my-lab, table: "memory row"}
"""


def test_user_yaml_adds_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(USER_YAML, encoding="utf-8")
    catalog = load_catalog(path)
    h100 = catalog.get("NVIDIA H100 80GB HBM3")
    assert h100.display_name == "H100 SXM (power-capped)"
    assert h100.peak_flops_per_s("bf16") == 700e12
    assert h100.sources["bf16_dense_tflops"].source.title == "Our lab's acceptance test sheet"
    assert "h100-sxm5" not in catalog  # the whole entry was replaced
    with pytest.raises(UserError, match="no fp8"):
        h100.peak_flops_per_s("fp8")
    proto = catalog.get("proto")
    assert proto.key == "my-gpu" and proto.sm_count is None and proto.l2_bytes is None
    assert catalog.get("h200").key == "h200"  # packaged entries stay
    assert catalog.files[-1] == path
    assert catalog.keys()[-1] == "my-gpu"


def _user_file(tmp_path: Path, number_line: str, extra: str = "") -> Path:
    text = f"""
gpus:
  bad-gpu:
    display_name: Bad
    architecture: custom{extra}
    numbers:
      {number_line}
      fp16_dense_tflops: {{value: 100, dense: true, source: techpowerup-gpu-db, table: t}}
      tf32_dense_tflops: {{value: 50, dense: true, source: techpowerup-gpu-db, table: t}}
      fp32_cuda_core_tflops: {{value: 20, dense: true, source: techpowerup-gpu-db, table: t}}
      memory_bandwidth_tb_s: {{value: 1.0, source: techpowerup-gpu-db, table: t}}
      memory_gib: {{value: 40, source: techpowerup-gpu-db, table: t}}
"""
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("number_line", "extra", "message"),
    [
        ("bf16_dense_tflops: {value: 200, sparse_listed: 200, dense: true, source: techpowerup-gpu-db, table: t}",
         "", "not half of sparse_listed"),
        ("bf16_dense_tflops: {value: 200, dense: false, source: techpowerup-gpu-db, table: t}", "", "dense: true"),
        ("bf16_dense_tflops: {value: 200, source: techpowerup-gpu-db, table: t}", "", "dense: true"),
        ("bf16_dense_tflops: {value: 200, dense: true, source: nowhere, table: t}", "", "not a declared source"),
        ("bf16_dense_tflops: {value: 200, dense: true, source: techpowerup-gpu-db}", "", "table"),
        ("bf16_dense_tflops: {value: -1, dense: true, source: techpowerup-gpu-db, table: t}", "", "positive"),
        ("bf16_tflops: {value: 1, dense: true, source: techpowerup-gpu-db, table: t}", "", "unknown number"),
        ("bf16_dense_tflops: {value: 200, dense: true, source: techpowerup-gpu-db, table: t}",
         "\n    aliases: [a100-sxm4]", "cannot tell them apart"),
        ("bf16_dense_tflops: {value: 200, dense: true, source: techpowerup-gpu-db, table: t}",
         "\n    aliases: [h200]", "key of one entry"),
        ("bf16_dense_tflops: {value: 200, dense: true, source: techpowerup-gpu-db, table: t}",
         "\n    driver_names: [NVIDIA X]", "driver_names_source"),
    ],
)
def test_bad_user_yaml_is_one_line_error(tmp_path: Path, number_line: str, extra: str, message: str) -> None:
    path = _user_file(tmp_path, number_line, extra)
    with pytest.raises(CatalogError, match=message) as info:
        load_catalog(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus: [1, 2", encoding="utf-8")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(bad)
    bad.write_text("gpus: {}\nextra: 1\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="unknown top-level"):
        load_catalog(bad)


def test_fp32_field_name_constant() -> None:
    assert CUDA_CORE_FP32_FIELD in REQUIRED_NUMBERS
