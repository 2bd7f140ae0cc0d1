"""TargetOperatorList: exact aten lookups, module-path refinement, ordered kernel patterns, bad files."""

from __future__ import annotations

import pytest

from llm_perf_opt.analytic.target_operators import (
    TargetOperatorError,
    categorize_kernel,
    categorize_module,
    categorize_op,
    load_target_operators,
    normalize_op_name,
)
from llm_perf_opt.vocab import OperatorCategory as C


@pytest.mark.parametrize(("name", "norm"), [("aten::mm", "mm"), ("aten.mm.default", "mm"),
                                            ("torch.ops.aten.addmm.default", "addmm"), ("bmm", "bmm"),
                                            ("aten::_softmax", "_softmax")])
def test_normalize(name, norm):
    assert normalize_op_name(name) == norm


@pytest.mark.parametrize(("op", "path", "cat"), [
    ("aten::addmm", None, C.GEMM),
    ("aten::mm", "lm_head", C.LM_HEAD),
    ("aten::mm", "model.language.layers.3.mlp.experts", C.MOE_EXPERTS),
    ("aten::mm", "model.language.layers.3.mlp.shared_experts.down_proj", C.GEMM),
    ("aten::mm", "model.language.layers.3.mlp.gate", C.MOE_ROUTER),
    ("aten::mm", "model.language.layers.3.mlp.gate_proj", C.GEMM),
    ("aten::_scaled_dot_product_flash_attention", None, C.ATTENTION),
    ("aten::convolution", None, C.CONV),
    ("aten::native_layer_norm", "lm_head", C.NORM),  # norms are not re-labelled by module context
    ("aten::topk", None, C.MOE_ROUTER),
    ("aten::embedding", None, C.EMBEDDING),
    ("aten::copy_", None, C.MEMORY),
    ("aten::gelu", None, C.ELEMENTWISE),
    ("aten::definitely_not_an_op", None, C.UNCATEGORIZED),
])
def test_categorize_op(op, path, cat):
    assert categorize_op(op, module_path=path) is cat


@pytest.mark.parametrize(("kernel", "cat"), [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", C.GEMM),
    ("nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NTT", C.GEMM),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>", C.ATTENTION),
    ("fmha_cutlassF_bf16_aligned_64x128_rf_sm80", C.ATTENTION),  # attention before gemm: contains cutlass
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float>", C.ATTENTION),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float>", C.NORM),
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", C.CONV),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", C.ELEMENTWISE),
    ("void at::native::elementwise_kernel<128, 2, at::native::direct_copy_kernel_cuda>", C.MEMORY),
    ("void at::native::indexSelectLargeIndex<c10::BFloat16, long, unsigned int, 2, 2, -2, true>", C.EMBEDDING),
    ("void at::native::sbtopk::gatherTopK<float, unsigned int, 2, false>", C.MOE_ROUTER),
    ("Memcpy HtoD (Pageable -> Device)", C.MEMORY),
    ("totally_unknown_kernel", C.UNCATEGORIZED),
])
def test_categorize_kernel(kernel, cat):
    assert categorize_kernel(kernel) is cat


def test_modules():
    assert categorize_module("Linear") is C.GEMM
    assert categorize_module("Linear", "lm_head") is C.LM_HEAD
    assert categorize_module("DeepseekOcr2TextExperts") is C.MOE_EXPERTS
    assert categorize_module("Mystery") is C.UNCATEGORIZED


def test_every_category_is_reachable():
    tol = load_target_operators()
    used = set(tol.aten_ops.values()) | set(tol.module_classes.values()) | {r.category for r in tol.kernel_patterns}
    used |= {c for _, c in tol.module_paths}
    assert used == set(C) - {C.UNCATEGORIZED}


@pytest.mark.parametrize(("text", "fragment"), [
    ("[]", "top level must be a mapping"),
    ("aten_ops: {}\nmodule_classes: {}\nmodule_paths: {}\n", "missing field 'kernel_patterns'"),
    ("aten_ops: {bogus: [mm]}\nmodule_classes: {}\nmodule_paths: {}\nkernel_patterns: []\n", "unknown category"),
    ("aten_ops: {gemm: [mm], conv: [mm]}\nmodule_classes: {}\nmodule_paths: {}\nkernel_patterns: []\n",
     "listed under both"),
    ("aten_ops: {}\nmodule_classes: {}\nmodule_paths: {}\nkernel_patterns: [{pattern: '(', category: gemm}]\n",
     "bad regex"),
])
def test_bad_files_one_line(tmp_path, text, fragment):
    path = tmp_path / "ops.yaml"
    path.write_text(text)
    with pytest.raises(TargetOperatorError) as exc:
        load_target_operators(path)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(TargetOperatorError, match="file not found"):
        load_target_operators(tmp_path / "nope.yaml")


def test_data_model_record_agrees():
    tol = load_target_operators()
    record = tol.to_record()
    for kernel in ("sm90_xmma_gemm_bf16", "flash_fwd_kernel", "vectorized_layer_norm_kernel", "nothing"):
        assert record.categorize_kernel(kernel) is tol.categorize_kernel(kernel)
    assert record.categorize_aten("aten::addmm") is C.GEMM and record.categorize_aten("mm") is C.GEMM
