"""Kernel-launch counts of the analytic MoE layer against the operators the real module dispatches.

The routed experts' launch count drives the host-overhead term of the calibrated
model, so it must follow the experts implementation the run used: a constant
for grouped_mm / batched_mm, one group per hit expert for the eager loop.
Counted with a dispatch mode on the tiny model (CPU, real transformers code):
every aten call that is not a view or a host-side scalar read is one kernel.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from llm_perf_opt.analytic.layers.decoder import RoutedExperts
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modeling import build_model

#: aten ops that launch no kernel: views, metadata, host reads of a scalar
NO_KERNEL = {
    "view", "_unsafe_view", "reshape", "expand", "permute", "transpose", "t", "unsqueeze", "squeeze", "select",
    "slice", "alias", "as_strided", "split", "chunk", "split_with_sizes", "unbind", "detach", "lift_fresh",
    "_reshape_alias", "narrow", "_local_scalar_dense", "empty", "empty_like",
}


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.__name__.split(".")[0]
        if name not in NO_KERNEL:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def _experts_ops(impl: str, tokens: int) -> tuple[int, int, RoutedExperts]:
    """(kernels dispatched by the experts module, experts hit, analytic layer) for one MoE call."""
    cfg = DeepseekOCRConfig.tiny()
    model = build_model(cfg, device="cpu", dtype=torch.float32, experts_implementation=impl)
    lang = cfg.language
    moe_index = next(i for i in range(lang.num_hidden_layers) if lang.is_moe_layer(i))
    moe = model.model.language.layers[moe_index].mlp
    x = torch.randn(1, tokens, lang.hidden_size, generator=torch.Generator().manual_seed(0))
    counted: dict[str, Any] = {}

    def pre(_m: Any, args: Any) -> None:
        counted["mode"] = _Count().__enter__()
        counted["ids"] = args[1]

    def post(_m: Any, _args: Any, _out: Any) -> None:
        counted["mode"].__exit__(None, None, None)

    h1 = moe.experts.register_forward_pre_hook(pre)
    h2 = moe.experts.register_forward_hook(post)
    try:
        with torch.no_grad():
            moe(x)
    finally:
        h1.remove()
        h2.remove()
    ids = counted["ids"].reshape(-1)
    per_expert = torch.bincount(ids, minlength=lang.n_routed_experts).tolist()
    layer = RoutedExperts("experts", "prefill", tokens=tokens, hidden=lang.hidden_size,  # type: ignore[arg-type]
                          intermediate=lang.moe_intermediate_size, experts=lang.n_routed_experts,
                          top_k=lang.num_experts_per_tok, act_bytes=4, weight_bytes=4,
                          tokens_per_expert=per_expert, implementation=impl)
    hit = sum(1 for n in per_expert if n > 0)
    return sum(counted["mode"].ops.values()), hit, layer


@pytest.mark.parametrize("impl", ["grouped_mm", "batched_mm"])
def test_constant_launches_match_dispatched_kernels(impl: str) -> None:
    counts = set()
    for tokens in (1, 5, 40):
        kernels, _hit, layer = _experts_ops(impl, tokens)
        counts.add(kernels)
        # the CPU dispatch shows the aten calls; CUDA's extra launches are checked by test_kernel_census.py
        assert layer.forward_kernel_launches() - layer.forward_cuda_launches() == kernels, (impl, tokens)
    assert len(counts) == 1, f"{impl}: kernel count should not depend on the routing, got {counts}"


def test_eager_launches_grow_with_experts_hit() -> None:
    few, hit_few, layer_few = _experts_ops("eager", 1)
    many, hit_many, layer_many = _experts_ops("eager", 40)
    assert hit_many > hit_few
    assert many > few
    # the constant part and the part per hit expert both agree exactly
    assert layer_few.forward_kernel_launches() == few
    assert layer_many.forward_kernel_launches() == many


def test_unknown_implementation_is_refused() -> None:
    with pytest.raises(ValueError, match="experts implementation"):
        RoutedExperts("experts", "prefill", tokens=1, hidden=8, intermediate=8, experts=4,  # type: ignore[arg-type]
                      top_k=2, act_bytes=2, weight_bytes=2, implementation="triton")
