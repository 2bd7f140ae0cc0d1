"""How the model routes: tokens per expert in each MoE layer of one prefill (random or local weights).

Runs one Stage 1 pass of the executable model (synthetic pages, a prefill and one decode token) with a hook on
every MoE layer's router, and prints per layer the (token, expert) pairs, the experts hit and the busiest
expert's load against the mean. The bench times routed-experts calls on i.i.d. tokens that reach every
expert (docs/hardware.md); this shows how far a run's routing is from that. ``--out`` writes the counts as
JSON, {"prefill": {layer index: [tokens per expert]}}, the routing the analytic model takes
(``AnalyticModel(routing_prefill=...)``).

    PYTHONPATH=src python scripts/analytical/routing_counts.py --mode base --dtype fp32 --device cpu
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from llm_perf_opt.errors import UserError
from llm_perf_opt.inputs.synthetic import synthetic_pages
from llm_perf_opt.profiling.session import ModelSession, SessionSettings, resolve_device
from llm_perf_opt.profiling.timers import StageRecorder
from llm_perf_opt.vocab import DType


def routing_counts(settings: SessionSettings) -> dict[int, list[int]]:
    """Decoder layer index -> tokens routed to each expert in the pass's prefill (the first router call of
    each MoE layer)."""
    sess = ModelSession(settings, resolve_device(settings.device))
    experts = sess.config.language.n_routed_experts
    counts: dict[int, list[int]] = {}

    def hook(layer: int) -> Any:
        def record(_mod: Any, _inp: Any, out: Any) -> None:
            if layer not in counts:  # the prefill's call; decode calls follow
                counts[layer] = torch.bincount(out[2].reshape(-1).cpu(), minlength=experts).tolist()
        return record

    for name, module in sess.model.named_modules():
        parts = name.split(".")
        if name.endswith("mlp.gate") and "layers" in parts:
            module.register_forward_hook(hook(int(parts[parts.index("layers") + 1])))
    sess.run_pass(synthetic_pages(settings.batch_size), StageRecorder(sess.device, nvtx=False), max_new_tokens=1)
    return dict(sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="base", help="resolution mode (default base)")
    p.add_argument("--batch-size", type=int, default=1, help="synthetic pages in the pass (default 1)")
    p.add_argument("--config", default="default", help="model config: default, tiny or a config.json path")
    p.add_argument("--model-dir", default=None, help="local checkpoint folder (default: random weights)")
    p.add_argument("--dtype", choices=[d.value for d in (DType.BF16, DType.FP32)], default="bf16",
                   help="compute dtype (fp32 on a CPU is faster than bf16)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--out", type=Path, default=None, help="write the counts as JSON here")
    args = p.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
        if args.out is not None and not args.out.parent.is_dir():
            raise UserError(f"--out {args.out}: no folder {args.out.parent}")
        settings = SessionSettings(config_name=args.config, model_dir=args.model_dir, mode=args.mode,
                                   prompt="<image>\nFree OCR.", max_new_tokens=1, batch_size=args.batch_size,
                                   dtype=DType(args.dtype), device=args.device, seed=args.seed)
        counts = routing_counts(settings)
    except UserError as exc:
        print(f"routing_counts.py: {exc}", file=sys.stderr)
        return 2
    if not counts:
        print("routing_counts.py: the model has no MoE layer", file=sys.stderr)
        return 2
    print(f"{'layer':>5} {'pairs':>6} {'experts hit':>11} {'busiest / mean':>14}")
    for layer, c in counts.items():
        pairs = sum(c)
        print(f"{layer:>5} {pairs:>6} {sum(1 for n in c if n):>11} {max(c) / (pairs / len(c)):>14.1f}")
    if args.out is not None:
        try:
            args.out.write_text(json.dumps({"prefill": {str(k): v for k, v in counts.items()}}, indent=1) + "\n")
        except OSError as exc:
            print(f"routing_counts.py: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
