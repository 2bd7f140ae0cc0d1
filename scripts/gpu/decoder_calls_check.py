#!/usr/bin/env python
"""Calls per launch of a real decode step, against a tiny decoder's (CUDA GPU).

The module probe times a tiny two-layer decoder (us per aten call); ``hw probe --decode-step`` turns it into
host us per launch of a real decode step by timing such steps next to it. This script checks the shortcut
that was tried first and rejected: extrapolating the whole decoder's calls per launch from tiny forwards of
2 and 3 layers (one more MoE layer, one more dense layer), assuming per-layer counts do not depend on the
widths. It counts the aten calls (a counting dispatch mode) and device launches (torch.profiler) of a real
decode step of the full model (random bf16 weights, ``DecodeStepProgram``: the profiler's own
``decode_step``) and times steps eagerly with CUDA events right after module probes. Writes one JSON object:

    PYTHONPATH=src python scripts/gpu/decoder_calls_check.py --mode base --batch 1 --out decoder-calls.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.host_speed import DecodeStepProgram
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modeling import tiny_decoder_program
from llm_perf_opt.profiling.timers import ModuleHostProbe, aten_calls, device_launches


def tiny_counts(config: DeepseekOCRConfig, dev: torch.device, dense: int, moe: int) -> tuple[int, int]:
    """(aten calls, device launches) of one forward of a tiny decoder of ``dense`` + ``moe`` layers."""
    prog = tiny_decoder_program(config, device=dev, dtype=torch.bfloat16, dense_layers=dense, moe_layers=moe)
    prog()
    prog()
    return aten_calls(prog), int(device_launches(prog, dev) or 0)


def extrapolated(config: DeepseekOCRConfig, base: tuple[int, int], more_moe: tuple[int, int],
                 more_dense: tuple[int, int]) -> tuple[int, int]:
    """(calls, launches) of the config's decoder from the 1+1, 1+2 and 2+1 tiny forwards, linear per layer."""
    lang = config.language
    n_dense = sum(1 for i in range(lang.num_hidden_layers) if not lang.is_moe_layer(i))
    n_moe = lang.num_hidden_layers - n_dense
    def one(b: int, m: int, d: int) -> int:
        return b + (n_moe - 1) * (m - b) + (n_dense - 1) * (d - b)

    return one(base[0], more_moe[0], more_dense[0]), one(base[1], more_moe[1], more_dense[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="base", help="resolution mode of the synthetic pages (default base)")
    ap.add_argument("--batch", type=int, default=1, help="pages per batch (default 1)")
    ap.add_argument("--steps", type=int, default=20, help="timed decode steps (default 20)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise UserError("needs a CUDA GPU")
    if args.batch < 1 or args.steps < 1:
        raise UserError(f"--batch and --steps must be >= 1, got {args.batch} and {args.steps}")
    config = DeepseekOCRConfig.default()
    dev = torch.device("cuda", 0)
    probe = ModuleHostProbe(tiny_decoder_program(config, device=dev, dtype=torch.bfloat16), dev, count_launches=True)
    base = (probe.ops, int(probe.launches or 0))
    calls_x, launches_x = extrapolated(config, base, tiny_counts(config, dev, 1, 2), tiny_counts(config, dev, 2, 1))
    step = DecodeStepProgram(config, dev, torch.bfloat16, mode=args.mode, batch=args.batch)
    step_ms, probes = [], []
    for _ in range(args.steps):
        probes.append(probe.probe())
        step_ms.append(step.time_step_ms())
    med_ms, med_probe = statistics.median(step_ms), statistics.median(probes)
    rec = {
        "mode": args.mode, "batch": args.batch, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(dev),
        "tiny_calls": base[0], "tiny_launches": base[1],
        "extrapolated_calls": calls_x, "extrapolated_launches": launches_x,
        "extrapolated_calls_per_launch": calls_x / launches_x,
        "step_calls": step.calls, "step_launches": step.launches, "step_calls_per_launch": step.calls / step.launches,
        "step_ms": step_ms, "module_probe_us": probes, "median_step_ms": med_ms, "median_module_probe_us": med_probe,
        "step_us_per_launch": med_ms * 1e3 / step.launches, "step_us_per_call": med_ms * 1e3 / step.calls,
    }
    rec["step_us_per_call_over_probe"] = rec["step_us_per_call"] / med_probe
    rec["step_us_per_launch_over_probe"] = rec["step_us_per_launch"] / med_probe
    args.out.write_text(json.dumps(rec, indent=2) + "\n")
    print(json.dumps({k: v for k, v in rec.items() if not isinstance(v, list)}, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"decoder_calls_check.py: {exc}", file=sys.stderr)
        sys.exit(2)
