"""Analytic tensor-core FLOPs vs torch.utils.flop_counter.FlopCounterMode on the executable model.

Tiny config on CPU for everything (MoE included, with the routing counts of the real run), every
resolution mode, Gundam with three tile grids, prefill and one decode step. The full config on the
meta device for the parts without routing (SAM, CLIP, projector per mode; dense layer 0, the
attention, router and shared experts of an MoE layer; LM head).

Counter notes: the model runs with eager attention (on CPU FlopCounterMode counts CPU SDPA as 0
FLOPs) and with the per-expert 'eager' MoE loop (it counts no FLOPs for transformers' 'grouped_mm'
path on CPU); the analytic numbers do not depend on either choice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.analytic.workloads import get_profile, with_overrides
from llm_perf_opt.models.deepseek_ocr import (
    DeepseekOCRConfig,
    build_model,
    build_prompt,
    decode_step,
    kv_cache_shapes,
    prefill,
    preprocess_image,
)
from llm_perf_opt.vocab import Stage

TINY = DeepseekOCRConfig.tiny()
TOLERANCE = 0.01

# (mode, page size): every mode; Gundam with three tile grids (3x2, 1x3, 2x2)
CASES = [
    ("tiny", (800, 600)),
    ("small", (600, 800)),
    ("base", (1000, 1400)),
    ("large", (1280, 1000)),
    ("gundam", (1700, 2200)),
    ("gundam", (3000, 1000)),
    ("gundam", (1000, 1000)),
]


def counted_total(counts: dict[str, dict], *keys: str) -> int:
    """FLOPs of the first counter key present (module keys depend on which module was called first)."""
    for key in keys:
        if key in counts:
            return int(sum(counts[key].values()))
    return 0


def compare(rows: list[tuple[str, float, float]], title: str) -> None:
    """Print analytic vs counted per module; fail on any module off by more than 1%."""
    print(f"\n{title}\n{'module':<44} {'analytic':>16} {'counted':>16} {'rel.diff':>9}")
    bad = []
    for name, analytic, counted in rows:
        rel = abs(analytic - counted) / counted if counted else (0.0 if analytic == 0 else float("inf"))
        print(f"{name:<44} {analytic:>16,.0f} {counted:>16,.0f} {rel:>9.2e}")
        if rel > TOLERANCE:
            bad.append(f"{name}: analytic {analytic:,.0f} vs counted {counted:,.0f}")
    assert not bad, "; ".join(bad)


@contextmanager
def routing_recorder(model) -> Iterator[dict[int, list[int]]]:
    """Tokens per routed expert of each MoE layer, from forward hooks on the routers."""
    routing: dict[int, list[int]] = {}
    handles = []
    for i, layer in enumerate(model.model.language.layers):
        gate = getattr(layer.mlp, "gate", None)
        if gate is None or not hasattr(gate, "top_k"):
            continue

        def hook(mod, _inp, out, i=i):
            idx = out[2].reshape(-1)
            routing[i] = torch.bincount(idx, minlength=mod.num_experts).tolist()

        handles.append(gate.register_forward_hook(hook))
    try:
        yield routing
    finally:
        for h in handles:
            h.remove()


@pytest.fixture(scope="module")
def tiny_model():
    return build_model(TINY, device="cpu", dtype=torch.float32, seed=0, attn_implementation="eager",
                       experts_implementation="eager")


def run_case(model, mode: str, size: tuple[int, int], batch: int = 1):
    """Prefill + one decode step under FlopCounterMode; returns counts, routing, analytic model, state."""
    pre = preprocess_image(Image.new("RGB", size, (255, 255, 255)), mode)
    prompt = build_prompt([pre.layout] * batch)
    with routing_recorder(model) as routing_p, FlopCounterMode(display=False) as fc_p:
        state = prefill(model, prompt, [pre] * batch)
    prefill_counts = fc_p.get_flop_counts()
    with routing_recorder(model) as routing_d, FlopCounterMode(display=False) as fc_d:
        state = decode_step(model, state, fixed_length=True)
    decode_counts = fc_d.get_flop_counts()
    text_tokens = prompt.lengths[0] - pre.layout.prompt_slots
    workload = with_overrides(get_profile("dsocr-standard-v1"), mode=mode, image_size=size,
                              prompt_text_tokens=text_tokens, batch_size=batch, dtype="fp32", attention="eager",
                              max_new_tokens=8)
    am = AnalyticModel(TINY, workload, routing_prefill=dict(routing_p), routing_decode=dict(routing_d))
    return prefill_counts, decode_counts, am, state, prompt


def decoder_rows(counts, tree, layers: int) -> list[tuple[str, float, float]]:
    flops = {path: layer.forward_tensor_core_flops() for path, layer in tree.walk()}
    rows = []
    for i in range(layers):
        path = f"model.language.layers.{i}"
        rows.append((path, flops[path], counted_total(counts, f"DeepseekOCRForCausalLM.{path}")))
    rows.append(("lm_head", flops["lm_head"], counted_total(counts, "DeepseekOCRForCausalLM.lm_head")))
    return rows


@pytest.mark.parametrize(("mode", "size"), CASES, ids=[f"{m}-{w}x{h}" for m, (w, h) in CASES])
def test_tiny_prefill_and_decode_flops_match_counter(tiny_model, mode, size):
    prefill_counts, decode_counts, am, _state, _ = run_case(tiny_model, mode, size)
    st = am.stages
    rows = [
        ("model.sam_model", st[Stage.VISION_SAM].forward_tensor_core_flops(),
         counted_total(prefill_counts, "DeepseekOcr2SamVisionEncoder", "DeepseekOCRForCausalLM.model.sam_model")),
        ("model.vision_model", st[Stage.VISION_CLIP].forward_tensor_core_flops(),
         counted_total(prefill_counts, "ClipVisionModel", "DeepseekOCRForCausalLM.model.vision_model")),
        ("model.projector", st[Stage.PROJECTOR].forward_tensor_core_flops(),
         counted_total(prefill_counts, "Projector", "DeepseekOCRForCausalLM.model.projector")),
    ]
    rows += decoder_rows(prefill_counts, st[Stage.PREFILL], TINY.language.num_hidden_layers)
    # nothing counted outside the modules above, and the whole prefill agrees
    rows.append(("TOTAL prefill incl. vision (counter Global)",
                 sum(st[s].forward_tensor_core_flops() for s in (Stage.VISION_SAM, Stage.VISION_CLIP,
                                                                 Stage.PROJECTOR, Stage.PREFILL)),
                 counted_total(prefill_counts, "Global")))
    assert sum(r[2] for r in rows[:-1]) == rows[-1][2], "the counter saw FLOPs outside the analysed modules"
    compare(rows, f"prefill {mode} {size[0]}x{size[1]} (tiny config, CPU)")

    step = am.decode_step(am.shape.decode_kv_len(0))
    drows = decoder_rows(decode_counts, step, TINY.language.num_hidden_layers)
    drows.append(("TOTAL decode step (counter Global)", step.forward_tensor_core_flops(),
                  counted_total(decode_counts, "Global")))
    assert sum(r[2] for r in drows[:-1]) == drows[-1][2], "the counter saw FLOPs outside the analysed modules"
    compare(drows, f"decode step 0 (KV length {am.shape.decode_kv_len(0)})")


def test_tiny_batch_two_and_kv_cache_after_one_step(tiny_model):
    prefill_counts, _, am, state, prompt = run_case(tiny_model, "small", (900, 700), batch=2)
    assert am.shape.prefill_tokens == prompt.lengths[0]
    total = sum(am.stages[s].forward_tensor_core_flops() for s in (Stage.VISION_SAM, Stage.VISION_CLIP,
                                                                    Stage.PROJECTOR, Stage.PREFILL))
    compare([("TOTAL prefill batch 2", total, counted_total(prefill_counts, "Global"))], "batch 2 (small)")
    # after prefill + one decode forward the cache holds prefill_tokens + 1 positions per row
    real = sum((torch.Size(k).numel() + torch.Size(v).numel()) * 4 for k, v in kv_cache_shapes(state.past_key_values))
    assert am.decode_step(am.shape.decode_kv_len(0)).forward_memory_kvcache() == real


def test_tiny_kv_cache_after_prefill_exact(tiny_model):
    pre = preprocess_image(Image.new("RGB", (640, 640), (255, 255, 255)), "small")
    prompt = build_prompt([pre.layout])
    state = prefill(tiny_model, prompt, [pre])
    real = sum((torch.Size(k).numel() + torch.Size(v).numel()) * 4 for k, v in kv_cache_shapes(state.past_key_values))
    workload = with_overrides(get_profile("dsocr-small-v1"), image_size=(640, 640),
                              prompt_text_tokens=prompt.lengths[0] - pre.layout.prompt_slots, dtype="fp32")
    am = AnalyticModel(TINY, workload)
    assert am.kv_cache_bytes_after_prefill() == real
