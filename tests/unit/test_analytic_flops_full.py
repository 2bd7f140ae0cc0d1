"""Analytic tensor-core FLOPs vs FlopCounterMode for the FULL config on the meta device (shapes only):
SAM, CLIP and projector in every mode (Gundam with four tile grids), and the decoder parts that need no
routing (dense layer 0, an MoE layer's attention, router and shared experts, the LM head) for prefill
and one decode step. The routed experts are checked on the tiny config (test_analytic_flops.py).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.analytic.workloads import get_profile, with_overrides
from llm_perf_opt.models.deepseek_ocr import DeepseekOCRConfig, build_model
from llm_perf_opt.vocab import Stage

TOLERANCE = 0.01


def counted_total(counts: dict[str, dict], *keys: str) -> int:
    """FLOPs of the first counter key present."""
    for key in keys:
        if key in counts:
            return int(sum(counts[key].values()))
    return 0


def compare(rows: list[tuple[str, float, float]], title: str) -> None:
    """Print analytic vs counted per module; fail on any module off by more than 1%."""
    print(f"\n{title}\n{'module':<44} {'analytic':>18} {'counted':>18} {'rel.diff':>9}")
    bad = []
    for name, analytic, counted in rows:
        rel = abs(analytic - counted) / counted if counted else (0.0 if analytic == 0 else float("inf"))
        print(f"{name:<44} {analytic:>18,.0f} {counted:>18,.0f} {rel:>9.2e}")
        if rel > TOLERANCE:
            bad.append(f"{name}: analytic {analytic:,.0f} vs counted {counted:,.0f}")
    assert not bad, "; ".join(bad)

# ---------------------------------------------------------------- full config on the meta device

@pytest.fixture(scope="module")
def full_meta():
    return build_model(DeepseekOCRConfig.default(), device="meta", dtype=torch.bfloat16,
                       attn_implementation="eager")


FULL_CASES = [("tiny", (800, 600)), ("small", (800, 600)), ("base", (800, 600)), ("large", (800, 600)),
              ("gundam", (1700, 2200)), ("gundam", (1600, 1000)), ("gundam", (3000, 1000)),
              ("gundam", (1000, 1000))]


@pytest.mark.parametrize(("mode", "size"), FULL_CASES, ids=[f"{m}-{w}x{h}" for m, (w, h) in FULL_CASES])
def test_full_config_vision_flops_on_meta(full_meta, mode, size):
    cfg = DeepseekOCRConfig.default()
    workload = with_overrides(get_profile("dsocr-standard-v1"), mode=mode, image_size=size, attention="eager")
    am = AnalyticModel(cfg, workload)
    totals = {"sam": 0, "clip": 0, "proj": 0, "global": 0}
    for _label, n, side in am.views():
        pixels = torch.empty(n, 3, side, side, device="meta", dtype=torch.bfloat16)
        with FlopCounterMode(display=False) as fc:
            sam = full_meta.encode_sam(pixels)
            clip = full_meta.encode_clip(sam)
            full_meta.project(clip, sam)
        c = fc.get_flop_counts()
        totals["sam"] += counted_total(c, "DeepseekOcr2SamVisionEncoder")
        totals["clip"] += counted_total(c, "ClipVisionModel")
        totals["proj"] += counted_total(c, "Projector")
        totals["global"] += counted_total(c, "Global")
    assert totals["sam"] + totals["clip"] + totals["proj"] == totals["global"]
    compare([("model.sam_model", am.stages[Stage.VISION_SAM].forward_tensor_core_flops(), totals["sam"]),
             ("model.vision_model", am.stages[Stage.VISION_CLIP].forward_tensor_core_flops(), totals["clip"]),
             ("model.projector", am.stages[Stage.PROJECTOR].forward_tensor_core_flops(), totals["proj"])],
            f"full config, meta: vision {mode} {size[0]}x{size[1]}")


def test_full_config_decoder_parts_on_meta(full_meta):
    """Dense layer 0, MoE layer 1 without its routed experts, and the LM head, prefill and one decode step."""
    cfg = DeepseekOCRConfig.default()
    workload = get_profile("dsocr-base-v1")
    am = AnalyticModel(cfg, workload)
    lang = full_meta.model.language
    h = cfg.language.hidden_size
    for label, q_len, kv_len, tree in (
        ("prefill", am.shape.prefill_tokens, am.shape.prefill_tokens, am.stages[Stage.PREFILL]),
        ("decode", 1, am.shape.decode_kv_len(0), am.decode_step(am.shape.decode_kv_len(0))),
    ):
        flops = {path: node.forward_tensor_core_flops() for path, node in tree.walk()}
        x = torch.empty(1, q_len, h, device="meta", dtype=torch.bfloat16)
        pos = torch.arange(kv_len - q_len, kv_len, device="meta")[None]
        cos_sin = lang.rotary_emb(x, pos)
        past_k = torch.empty(1, cfg.language.num_key_value_heads, kv_len - q_len, cfg.language.head_dim,
                             device="meta", dtype=torch.bfloat16)
        rows = []
        with FlopCounterMode(display=False) as fc:
            lang.layers[0](x, position_embeddings=cos_sin, attention_mask=None)
        rows.append(("layers.0 (dense, no cache)", flops["model.language.layers.0"]
                     - _cache_extra(cfg, q_len, kv_len), counted_total(fc.get_flop_counts(), "Global")))
        layer1 = lang.layers[1]
        with FlopCounterMode(display=False) as fc:
            q = layer1.self_attn.q_proj(x)
            k = torch.cat([past_k, layer1.self_attn.k_proj(x).view(1, q_len, -1, cfg.language.head_dim)
                           .transpose(1, 2)], dim=2)
            v = torch.cat([past_k, layer1.self_attn.v_proj(x).view(1, q_len, -1, cfg.language.head_dim)
                           .transpose(1, 2)], dim=2)
            qh = q.view(1, q_len, -1, cfg.language.head_dim).transpose(1, 2)
            out = torch.matmul(torch.matmul(qh, k.transpose(2, 3)).softmax(-1), v)
            layer1.self_attn.o_proj(out.transpose(1, 2).reshape(1, q_len, -1))
        rows.append(("layers.1.self_attn (KV length L)", flops["model.language.layers.1.self_attn"],
                     counted_total(fc.get_flop_counts(), "Global")))
        with FlopCounterMode(display=False) as fc:
            layer1.mlp.gate(x)
            layer1.mlp.shared_experts(x)
        rows.append(("layers.1.mlp gate + shared_experts", flops["model.language.layers.1.mlp.gate"]
                     + flops["model.language.layers.1.mlp.shared_experts"],
                     counted_total(fc.get_flop_counts(), "Global")))
        with FlopCounterMode(display=False) as fc:
            full_meta.lm_head(x[:, -1:])
        rows.append(("lm_head (last position)", flops["lm_head"], counted_total(fc.get_flop_counts(), "Global")))
        compare(rows, f"full config, meta: decoder parts, {label}")


def _cache_extra(cfg: DeepseekOCRConfig, q_len: int, kv_len: int) -> float:
    """Attention FLOPs over cached positions (layer 0 is run here without a cache: keys = q_len only)."""
    lang = cfg.language
    return 2 * 2 * lang.num_attention_heads * q_len * (kv_len - q_len) * lang.head_dim
