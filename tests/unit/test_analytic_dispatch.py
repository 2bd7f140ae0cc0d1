"""Analytic kernels and bytes of the vision layers against what the real modules dispatch.

The default (full-size) model is built on the meta device, so every tensor
has its real shape but nothing is computed; tests/unit/dispatch_meter.py
counts the kernels and the bytes read + written of the aten calls each module
makes. The SAM blocks (windowed and global attention) and the CLIP tower must
agree with the analytic layers: their kernel counts drive the host side of the
timeline model and their bytes its device side.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from dispatch_meter import meter_module
from torch.utils._python_dispatch import TorchDispatchMode

from llm_perf_opt.analytic.base import (
    PROJECTOR_GROUP_HOST_OPS,
    PROJECTOR_RANGE_HOST_OPS,
    PROJECTOR_VIEW_CALL_WEIGHT,
)
from llm_perf_opt.analytic.layers.vision import ClipEncoder, SamBlock, SamEncoder
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modeling import build_model
from llm_perf_opt.vocab import Stage

CFG = DeepseekOCRConfig.named("default")


@pytest.fixture(scope="module")
def model() -> Any:
    return build_model(CFG, device="meta", dtype=torch.bfloat16)


def _pixels(side: int, views: int = 1) -> torch.Tensor:
    return torch.zeros(views, 3, side, side, device="meta", dtype=torch.bfloat16)


@pytest.mark.parametrize("side, views", [(1024, 1), (640, 1), (640, 2)])  # 2 views: the global qkv is copied
@pytest.mark.parametrize("index", [0, 2])  # block 0 is windowed, block 2 global (global_attn_indexes)
def test_sam_block_matches_dispatched_kernels_and_bytes(model: Any, side: int, views: int, index: int) -> None:
    sam = model.model.sam_model
    x = _pixels(side, views)
    meter = meter_module(model, sam.layers[index], lambda: model.encode_sam(x))
    window = 0 if index in CFG.sam.global_attn_indexes else CFG.sam.window_size
    layer = SamBlock("b", Stage.VISION_SAM, CFG.sam, views=views, grid=side // CFG.sam.patch_size, window=window,
                     fused=False, act_bytes=2, weight_bytes=2)
    # launches CUDA adds inside the dispatched calls (index copies, zero-fills, contiguity copies) are
    # counted by the kernel census (test_kernel_census.py), not by the meta dispatch
    assert layer.forward_kernel_launches() - layer.forward_cuda_launches() == meter.total_kernels, dict(meter.kernels)
    assert layer.forward_cal_io() - layer.forward_cuda_io() == pytest.approx(meter.total_bytes, rel=0.005)
    # the host-side index arithmetic of the two rel-pos lookups (timeline model: host time, no kernel)
    assert sum(node.host_ops for _, node in layer.walk()) == sum(meter.host_ops.values()), dict(meter.host_ops)


@pytest.mark.parametrize("side", [1024, 640])
def test_sam_encoder_bytes_match(model: Any, side: int) -> None:
    x = _pixels(side)
    meter = meter_module(model, model.model.sam_model, lambda: model.encode_sam(x))
    layer = SamEncoder("sam", Stage.VISION_SAM, CFG.sam, views=1, side_px=side, fused=False, act_bytes=2,
                       weight_bytes=2)
    assert layer.forward_cal_io() - layer.forward_cuda_io() == pytest.approx(meter.total_bytes, rel=0.01)
    # the neck's two channel-first LayerNorms are counted as 3 launches each (permute copies on CUDA);
    # everything else is one kernel per dispatched call plus the launches CUDA adds inside them
    assert layer.forward_kernel_launches() - layer.forward_cuda_launches() == meter.total_kernels + 4


@pytest.mark.parametrize("side", [1024, 640])  # 640: the position table is resized (bicubic in fp32)
@pytest.mark.parametrize("views", [1, 3])  # several views: q, k, v are copied for the batched products
def test_clip_encoder_matches_dispatched_kernels_and_bytes(model: Any, side: int, views: int) -> None:
    feats = model.encode_sam(_pixels(side, views))
    meter = meter_module(model, model.model.vision_model, lambda: model.encode_clip(feats))
    grid = feats.shape[-1]
    layer = ClipEncoder("clip", Stage.VISION_CLIP, CFG.clip, views=views, grid=grid, fused=False, act_bytes=2,
                        weight_bytes=2)
    assert layer.forward_kernel_launches() == meter.total_kernels, dict(meter.kernels)
    assert layer.forward_cal_io() == pytest.approx(meter.total_bytes, rel=0.01)


class _HostIndices(TorchDispatchMode):
    """Counts device gathers whose index tensor lives on the host (each one a copy + sync on CUDA)."""

    def __init__(self) -> None:
        super().__init__()
        self.host_indexed = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func.__name__.startswith("index.") and args and isinstance(args[0], torch.Tensor):
            indices = args[1] if len(args) > 1 else []
            if args[0].device.type == "meta" and any(isinstance(i, torch.Tensor) and i.device.type == "cpu"
                                                     for i in indices):
                self.host_indexed += 1
        return func(*args, **(kwargs or {}))


def test_sam_host_syncs_follow_the_implementation(model: Any) -> None:
    """The timeline model's syncs: 2 host-indexed gathers per SAM attention + the pixel upload."""
    mode = _HostIndices()
    with torch.no_grad(), mode:
        model.encode_sam(_pixels(1024))
    layer = SamEncoder("sam", Stage.VISION_SAM, CFG.sam, views=1, side_px=1024, fused=False, act_bytes=2,
                       weight_bytes=2)
    syncs = [node.host_syncs for _, node in layer.walk() if node.host_syncs]
    assert mode.host_indexed == 2 * CFG.sam.depth
    assert sum(syncs) == mode.host_indexed + 1  # + the pageable pixel copy of encode_sam


class _Calls(TorchDispatchMode):
    """Counts the aten calls made inside :meth:`within` (True)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.active = False

    def within(self, active: bool) -> Any:
        import contextlib

        @contextlib.contextmanager
        def scope() -> Any:
            before, self.active = self.active, active
            try:
                yield
            finally:
                self.active = before

        return scope()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.calls += self.active
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mode, batch", [("base", 1), ("base", 4), ("gundam", 2)])
def test_projector_stage_matches_the_projector_range(model: Any, mode: str, batch: int) -> None:
    """Everything the runner's projector range dispatches: fusion, projection, newline/separator layout."""
    import contextlib
    from collections.abc import Iterator

    from dispatch_meter import DispatchMeter

    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.data.analytic import OCRWorkloadProfile
    from llm_perf_opt.inputs.synthetic import synthetic_pages
    from llm_perf_opt.models.deepseek_ocr.preprocess import preprocess_image

    pages = synthetic_pages(batch)
    images = [preprocess_image(p.load(), mode) for p in pages]
    meter = DispatchMeter()

    @contextlib.contextmanager
    def scope(name: str) -> Iterator[None]:
        before, meter.active = meter.active, name == Stage.PROJECTOR.value
        try:
            yield
        finally:
            meter.active = before

    with torch.no_grad(), meter:
        model.embed_images(images, scope)
    wl = OCRWorkloadProfile.create(profile_id="p", mode=mode, image_width_px=pages[0].width,
                                   image_height_px=pages[0].height, prompt_text_tokens=9, max_new_tokens=4,
                                   batch_size=batch)
    stage = AnalyticModel(CFG, wl).stages[Stage.PROJECTOR]
    assert stage.forward_kernel_launches() == meter.total_kernels, dict(meter.kernels)
    assert stage.forward_cal_io() == pytest.approx(meter.total_bytes, rel=0.01)
    # the aten calls of the range as the runs make them (inference mode: composites not decomposed) that
    # launch nothing of their own, each charged PROJECTOR_VIEW_CALL_WEIGHT of an op's host time, beside the
    # range's fixed host work and its view groups'; the tiled grid's copy is launched inside a reshape (an
    # inner launch)
    calls = _Calls()
    with torch.inference_mode(), calls:
        model.embed_images(images, lambda name: calls.within(name == Stage.PROJECTOR.value))
    nodes = [node for _, node in stage.walk() if not node.children]
    launching = stage.forward_kernel_launches() - sum(node.inner_launches * node.count for node in nodes)
    host_ops = sum(node.host_ops * node.count for node in nodes)
    groups = sum(1 for node in nodes if type(node).__name__ == "FeatureFusion")
    projected: list[int] = []  # the range projects one group per view size (tiles and global view: two)
    project = model.project
    model.project = lambda *a, **k: (projected.append(1), project(*a, **k))[1]
    try:
        with torch.inference_mode():
            model.embed_images(images)
    finally:
        del model.project
    assert groups == len(projected) == (2 if mode == "gundam" else 1)
    assert host_ops == pytest.approx(PROJECTOR_RANGE_HOST_OPS + groups * PROJECTOR_GROUP_HOST_OPS
                                     + (calls.calls - launching) * PROJECTOR_VIEW_CALL_WEIGHT)


@pytest.mark.parametrize("index", [0, 1])  # layer 0 is dense, layer 1 MoE (first_k_dense_replace = 1)
def test_decoder_layer_matches_dispatched_kernels_prefill_and_decode(model: Any, index: int) -> None:
    """RMSNorm, RoPE, KV-cache concat, eager attention and MLP as dispatched; MoE layers by kernel count.

    The routed experts' bytes depend on which experts a token hits; on meta tensors grouped_mm reads every
    expert's weights, so only the dense layer's bytes are compared (the experts' launches have their own
    test in test_analytic_launches.py).
    """
    from llm_perf_opt.analytic.layers.decoder import DecoderLayer

    lang = CFG.language
    lm = model.model.language
    s = 37
    x = torch.zeros(1, s, lang.hidden_size, device="meta", dtype=torch.bfloat16)
    assert lang.is_moe_layer(index) == (index == 1)
    prefill = meter_module(model, lm.layers[index], lambda: lm(inputs_embeds=x, use_cache=True))
    with torch.no_grad():
        cache = lm(inputs_embeds=x, use_cache=True).past_key_values
    step = torch.zeros(1, 1, lang.hidden_size, device="meta", dtype=torch.bfloat16)
    decode = meter_module(model, lm.layers[index], lambda: lm(
        inputs_embeds=step, past_key_values=cache, use_cache=True, position_ids=torch.tensor([[s]], device="meta")))
    for meter, q_len, kv_len, stage in ((prefill, s, s, Stage.PREFILL), (decode, 1, s + 1, Stage.DECODE)):
        layer = DecoderLayer("l", stage, lang, index=index, batch=1, q_len=q_len, kv_len=kv_len, fused=False,
                             causal_skip=False, act_bytes=2, weight_bytes=2)
        assert layer.forward_kernel_launches() - layer.forward_cuda_launches() == meter.total_kernels, (
            stage, dict(meter.kernels))
        if index == 0:
            assert layer.forward_cal_io() - layer.forward_cuda_io() == pytest.approx(meter.total_bytes, rel=0.005), stage
