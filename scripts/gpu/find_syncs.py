#!/usr/bin/env python
"""Which operators issue synchronising CUDA calls in the vision stages (full-size model, random bf16 weights).

Runs SAM and CLIP on one preprocessed page under torch.profiler (after a warm-up) and prints every
cudaStreamSynchronize / cudaDeviceSynchronize / cudaMemcpy* call with its duration and the chain of
operators that issued it.

    PYTHONPATH=src python scripts/gpu/find_syncs.py [--mode base] [--batch 1]
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image

from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modeling import build_model
from llm_perf_opt.models.deepseek_ocr.preprocess import preprocess_image

CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpy", "cudaMemcpyAsync")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="base", help="resolution mode of the page (default base)")
    parser.add_argument("--batch", type=int, default=1, help="pages per SAM call (default 1)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("find_syncs.py: needs a CUDA GPU")
    model = build_model(DeepseekOCRConfig.default(), device="cuda", dtype=torch.bfloat16)
    pre = preprocess_image(Image.new("RGB", (1240, 1754), "white"), args.mode)
    pixels = pre.global_view.unsqueeze(0).repeat(args.batch, 1, 1, 1)
    with torch.inference_mode():
        for _ in range(2):  # warm-up
            model.encode_clip(model.encode_sam(pixels))
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            with torch.profiler.record_function("vision.sam"):
                feats = model.encode_sam(pixels)
            with torch.profiler.record_function("vision.clip"):
                model.encode_clip(feats)
            torch.cuda.synchronize()
    print(f"mode {args.mode}, batch {args.batch}, pixels {tuple(pixels.shape)} {pixels.dtype} "
          f"pinned={pixels.is_pinned()}")
    for e in prof.events():
        if e.name not in CALLS:
            continue
        chain, p = [], e.cpu_parent
        while p is not None:
            chain.append(p.name)
            p = p.cpu_parent
        print(f"{e.name:<24} {(e.time_range.end - e.time_range.start) / 1e3:9.3f} ms  <- {' <- '.join(chain[:6])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
