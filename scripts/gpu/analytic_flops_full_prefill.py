"""Full DeepSeek-OCR (random bf16 weights) on a GPU: one Base-mode prefill and one decode step under
torch.utils.flop_counter.FlopCounterMode, compared per top module with the analytic model (using the
routing counts of this run). Prints a table; writes $OUT/analytic_flops_full_prefill.json
($OUT defaults to ./tmp/gpu-out). Exit status 1 when any module differs by more than 1%.

    python scripts/gpu/analytic_flops_full_prefill.py [--mode base] [--image-size 1000x1400] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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
    prefill,
    preprocess_image,
)
from llm_perf_opt.vocab import Stage

TOLERANCE = 0.01


def total(counts: dict, *keys: str) -> int:
    for key in keys:
        if key in counts:
            return int(sum(counts[key].values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="base", help="resolution mode")
    parser.add_argument("--image-size", default="1000x1400", help="page WIDTHxHEIGHT in pixels")
    parser.add_argument("--device", default="cuda", help="torch device (cuda, or cpu with ~16 GB free)")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.image_size.split("x"))
    cfg = DeepseekOCRConfig.default()
    model = build_model(cfg, device=args.device, dtype=torch.bfloat16, seed=0, attn_implementation="eager",
                        experts_implementation="eager")
    pre = preprocess_image(Image.new("RGB", (w, h), (255, 255, 255)), args.mode)
    prompt = build_prompt([pre.layout])
    routing_p: dict[int, list[int]] = {}
    routing_d: dict[int, list[int]] = {}
    target = routing_p
    handles = []
    for i, layer in enumerate(model.model.language.layers):
        gate = getattr(layer.mlp, "gate", None)
        if gate is not None and hasattr(gate, "top_k"):
            def hook(mod, _inp, out, i=i):
                target[i] = torch.bincount(out[2].reshape(-1), minlength=mod.num_experts).tolist()
            handles.append(gate.register_forward_hook(hook))
    with FlopCounterMode(display=False) as fc_p:
        state = prefill(model, prompt, [pre])
    target = routing_d
    with FlopCounterMode(display=False) as fc_d:
        decode_step(model, state, fixed_length=True)
    workload = with_overrides(get_profile("dsocr-standard-v1"), mode=args.mode, image_size=(w, h),
                              prompt_text_tokens=prompt.lengths[0] - pre.layout.prompt_slots, attention="eager",
                              max_new_tokens=8)
    am = AnalyticModel(cfg, workload, routing_prefill=routing_p, routing_decode=routing_d)
    cp, cd = fc_p.get_flop_counts(), fc_d.get_flop_counts()
    rows = [("prefill", "model.sam_model", am.stages[Stage.VISION_SAM].forward_tensor_core_flops(),
             total(cp, "DeepseekOcr2SamVisionEncoder")),
            ("prefill", "model.vision_model", am.stages[Stage.VISION_CLIP].forward_tensor_core_flops(),
             total(cp, "ClipVisionModel")),
            ("prefill", "model.projector", am.stages[Stage.PROJECTOR].forward_tensor_core_flops(),
             total(cp, "Projector"))]
    step = am.decode_step(am.shape.decode_kv_len(0))
    for label, tree, counts in (("prefill", am.stages[Stage.PREFILL], cp), ("decode", step, cd)):
        flops = {p: n.forward_tensor_core_flops() for p, n in tree.walk()}
        for i in range(cfg.language.num_hidden_layers):
            path = f"model.language.layers.{i}"
            rows.append((label, path, flops[path], total(counts, f"DeepseekOCRForCausalLM.{path}")))
        rows.append((label, "lm_head", flops["lm_head"], total(counts, "DeepseekOCRForCausalLM.lm_head")))
    vision = sum(r[2] for r in rows[:3])
    rows.append(("prefill", "TOTAL (Global)", vision + am.stages[Stage.PREFILL].forward_tensor_core_flops(),
                 total(cp, "Global")))
    rows.append(("decode", "TOTAL (Global)", step.forward_tensor_core_flops(), total(cd, "Global")))
    print(f"{'stage':<8} {'module':<28} {'analytic':>20} {'counted':>20} {'rel.diff':>9}")
    out_rows, bad = [], 0
    for stage, name, a, c in rows:
        rel = abs(a - c) / c if c else float("inf")
        bad += rel > TOLERANCE
        print(f"{stage:<8} {name:<28} {a:>20,.0f} {c:>20,.0f} {rel:>9.2e}")
        out_rows.append({"stage": stage, "module": name, "analytic_flops": a, "counted_flops": c, "rel_diff": rel})
    out = Path(os.environ.get("OUT", "tmp/gpu-out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "analytic_flops_full_prefill.json").write_text(json.dumps(
        {"device": str(torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device),
         "mode": args.mode, "image_size": [w, h], "prefill_tokens": am.shape.prefill_tokens, "rows": out_rows},
        indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
