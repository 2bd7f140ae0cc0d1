"""GPU smoke test of the executable DeepSeek-OCR: prefill and fixed-length decode timings per mode.

Builds the model with seeded random weights (default: full size, bf16, CUDA), preprocesses one
synthetic page per mode (Base: 1024-class page; Gundam: a 1700x2200 page -> 3x2 tiles), then per mode:
warm-up, and ``--repeats`` timed runs of prefill + ``--new-tokens`` fixed-length greedy decode steps.
On CUDA every prefill and every decode step is timed with CUDA events (synchronised once per run);
on CPU with perf_counter. Reports medians over repeats: prefill ms, decode ms/token, and peak GPU
memory; prints a table and writes ``model_smoke.json`` under $OUT (default ./tmp/gpu-out).

    python scripts/gpu/model_smoke.py                          # H100: full size, bf16
    python scripts/gpu/model_smoke.py --config tiny --device cpu --new-tokens 8 --repeats 2   # CPU check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

try:
    import llm_perf_opt  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`: use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from llm_perf_opt.models.deepseek_ocr import (
    DeepseekOCRConfig,
    build_model,
    build_prompt,
    decode_step,
    prefill,
    preprocess_image,
)
from llm_perf_opt.vocab import parse_dtype

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: Synthetic page per mode (pixels): Base gets a letter page, Gundam the 1700x2200 page of the brief.
PAGES = {"tiny": (850, 1100), "small": (850, 1100), "base": (850, 1100), "large": (1700, 2200),
         "gundam": (1700, 2200)}


def synthetic_page(width: int, height: int, seed: int = 0) -> Image.Image:
    """White page with deterministic dark text-like bars."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    g = torch.Generator().manual_seed(seed)
    line_h = max(height // 60, 6)
    for y in range(line_h * 2, height - line_h * 2, line_h * 2):
        x = width // 12
        while x < width - width // 12:
            w = int(torch.randint(width // 40, width // 10, (1,), generator=g))
            draw.rectangle((x, y, min(x + w, width - width // 12), y + line_h), fill=(20, 20, 20))
            x += w + width // 60
    return img


class Timer:
    """Per-interval timing: CUDA events on CUDA, perf_counter elsewhere. ``elapsed_ms()`` syncs once."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def elapsed_ms(self) -> list[float]:
        """Milliseconds between consecutive marks."""
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:], strict=False)]
        return [(b - a) * 1e3 for a, b in zip(self.marks, self.marks[1:], strict=False)]


def one_run(model: Any, batch: Any, images: list[Any], new_tokens: int, device: torch.device) -> tuple[float, list[float]]:
    """Prefill + ``new_tokens`` fixed-length decode steps; returns (prefill ms, per-step ms)."""
    timer = Timer(device)
    timer.mark()
    state = prefill(model, batch, images)
    timer.mark()
    for i in range(new_tokens):
        state = decode_step(model, state, fixed_length=True, forward=i < new_tokens - 1)
        timer.mark()
    ms = timer.elapsed_ms()
    if state.tokens.shape[1] != new_tokens:
        raise RuntimeError(f"expected {new_tokens} tokens, got {state.tokens.shape[1]}")
    return ms[0], ms[1:]


def measure_mode(model: Any, mode: str, args: argparse.Namespace, device: torch.device,
                 log: Callable[[str], None]) -> dict[str, Any]:
    width, height = PAGES[mode]
    image = preprocess_image(synthetic_page(width, height), mode)
    images = [image] * args.batch
    batch = build_prompt([im.layout for im in images])
    for _ in range(args.warmup):
        one_run(model, batch, images, min(args.new_tokens, 8), device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    prefills, per_token, step_medians = [], [], []
    for r in range(args.repeats):
        p_ms, steps = one_run(model, batch, images, args.new_tokens, device)
        prefills.append(p_ms)
        per_token.append(sum(steps) / len(steps))
        step_medians.append(statistics.median(steps))
        log(f"  {mode} repeat {r}: prefill {p_ms:.1f} ms, decode {per_token[-1]:.2f} ms/token")
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {
        "mode": mode, "page_px": [width, height], "batch": args.batch,
        "tile_grid": [image.layout.rows, image.layout.cols], "tiles": image.layout.num_tiles,
        "prompt_slots": image.layout.prompt_slots, "prompt_tokens": int(batch.input_ids.shape[1]),
        "tokenizer_kind": batch.tokenizer_kind, "new_tokens": args.new_tokens, "repeats": args.repeats,
        "prefill_ms": statistics.median(prefills), "prefill_ms_all": prefills,
        "decode_ms_per_token": statistics.median(per_token), "decode_ms_per_token_all": per_token,
        "decode_step_ms_median": statistics.median(step_medians),
        "decode_tokens_per_s": 1e3 * args.batch / statistics.median(per_token),
        "peak_memory_mib": peak,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="default", help="'default' (full size), 'tiny', or a config.json path")
    p.add_argument("--device", default="cuda", help="torch device: cuda (default) or cpu")
    p.add_argument("--dtype", default="bf16", help="weight/compute dtype: bf16, fp16 or fp32")
    p.add_argument("--modes", default="base,gundam", help="comma-separated resolution modes")
    p.add_argument("--new-tokens", type=int, default=128, help="fixed-length decode tokens per run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per mode (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per mode (8 tokens each)")
    p.add_argument("--batch", type=int, default=1, help="pages per batch (same page repeated)")
    p.add_argument("--attn", default="eager", choices=["eager", "sdpa"], help="attention implementation")
    p.add_argument("--experts", default="grouped_mm", choices=["grouped_mm", "batched_mm", "eager"],
                   help="transformers MoE experts implementation")
    p.add_argument("--seed", type=int, default=0, help="random-weight seed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = Path(os.environ.get("OUT") or "./tmp/gpu-out")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("model_smoke: error: --device cuda but no CUDA GPU is visible", file=sys.stderr)
        return 2
    dtype = TORCH_DTYPES[parse_dtype(args.dtype).value]
    modes = [m.strip().lower() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in PAGES]
    if unknown:
        print(f"model_smoke: error: unknown modes {unknown}; known: {', '.join(PAGES)}", file=sys.stderr)
        return 2
    config = DeepseekOCRConfig.named(args.config)
    t0 = time.perf_counter()
    model = build_model(config, device=device, dtype=dtype, seed=args.seed, attn_implementation=args.attn,
                        experts_implementation=args.experts)
    if device.type == "cuda":
        torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    import transformers

    result: dict[str, Any] = {
        "command": " ".join([sys.executable, *sys.argv]),
        "config": config.name, "device": str(device), "dtype": args.dtype,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "attn_implementation": args.attn,
        "experts_implementation_effective": model.model.language.config._experts_implementation,
        "weights": f"random (seed {args.seed})", "build_s": build_s,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_memory_mib": torch.cuda.memory_allocated() / 2**20 if device.type == "cuda" else None,
        "timing": "CUDA events, median over repeats" if device.type == "cuda" else "perf_counter (CPU)",
        "results": [],
    }
    out_file = out_dir / "model_smoke.json"
    print(f"built {config.name} on {device} ({args.dtype}) in {build_s:.1f} s, {result['parameters']:,} params, "
          f"experts={result['experts_implementation_effective']}", flush=True)
    for mode in modes:
        result["results"].append(measure_mode(model, mode, args, device, lambda s: print(s, flush=True)))
        out_file.write_text(json.dumps(result, indent=2))  # measured work is on disk before the next mode
    print(f"\n{'mode':<8} {'tiles':>5} {'prompt tok':>10} {'prefill ms':>11} {'decode ms/tok':>14} {'tok/s':>8} {'peak MiB':>9}")
    for r in result["results"]:
        peak = f"{r['peak_memory_mib']:.0f}" if r["peak_memory_mib"] is not None else "-"
        print(f"{r['mode']:<8} {r['tiles']:>5} {r['prompt_tokens']:>10} {r['prefill_ms']:>11.1f} "
              f"{r['decode_ms_per_token']:>14.2f} {r['decode_tokens_per_s']:>8.1f} {peak:>9}")
    print(f"\nwrote {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
