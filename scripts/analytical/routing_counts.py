"""How the model routes: tokens per expert in each MoE layer of one prefill (random or local weights).

Runs one Stage 1 pass of the executable model (synthetic pages, a prefill and one decode token) with a hook on
every MoE layer's router, and prints per layer the (token, expert) pairs, the experts hit and the busiest
expert's load against the mean. The bench times routed-experts calls on i.i.d. tokens that reach every
expert (docs/hardware.md); this shows how far a run's routing is from that. ``--out`` writes the counts as
JSON, {"prefill": {layer index: [tokens per expert]}}, the routing the analytic model takes
(``AnalyticModel(routing_prefill=...)``). ``--decode-steps N`` also records N decode forwards (one token per
row each) and prints per layer the experts one step hits, the count a routed-experts call's device time
follows (reports/hardware/h200/experts-routing-decode.json); the JSON then holds "decode": {layer index:
[[tokens per expert] per step]}.

    PYTHONPATH=src python scripts/analytical/routing_counts.py --mode base --dtype fp32 --device cpu
    PYTHONPATH=src python scripts/analytical/routing_counts.py --mode base --batch-size 16 --device cuda \
        --decode-steps 8
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from llm_perf_opt.cli import CommandParser
from llm_perf_opt.errors import UserError
from llm_perf_opt.inputs.synthetic import synthetic_pages
from llm_perf_opt.profiling.session import ModelSession, SessionSettings, resolve_device
from llm_perf_opt.profiling.timers import StageRecorder
from llm_perf_opt.vocab import DType


def routing_calls(settings: SessionSettings, decode_steps: int = 0
                  ) -> tuple[dict[int, list[int]], dict[int, list[list[int]]]]:
    """(prefill, decode): decoder layer index -> tokens routed to each expert in the pass's prefill (the first
    router call of each MoE layer), and -> the same per decode forward for ``decode_steps`` forwards."""
    sess = ModelSession(settings, resolve_device(settings.device))
    experts = sess.config.language.n_routed_experts
    calls: dict[int, list[list[int]]] = {}

    def hook(layer: int) -> Any:
        def record(_mod: Any, _inp: Any, out: Any) -> None:
            calls.setdefault(layer, []).append(torch.bincount(out[2].reshape(-1).cpu(), minlength=experts).tolist())
        return record

    for name, module in sess.model.named_modules():
        parts = name.split(".")
        if name.endswith("mlp.gate") and "layers" in parts:
            module.register_forward_hook(hook(int(parts[parts.index("layers") + 1])))
    # max_new_tokens = 1 + steps: the first token comes from the prefill's logits, each later one from a forward
    sess.run_pass(synthetic_pages(settings.batch_size), StageRecorder(sess.device, nvtx=False),
                  max_new_tokens=1 + decode_steps)
    ordered = sorted(calls.items())
    return {k: v[0] for k, v in ordered}, {k: v[1:] for k, v in ordered if decode_steps}


def routing_counts(settings: SessionSettings) -> dict[int, list[int]]:
    """Decoder layer index -> tokens routed to each expert in the pass's prefill."""
    return routing_calls(settings)[0]


def main(argv: list[str] | None = None) -> int:
    p = CommandParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="base", help="resolution mode (default base)")
    p.add_argument("--batch-size", type=int, default=1, help="synthetic pages in the pass (default 1)")
    p.add_argument("--config", default="default", help="model config: default, tiny or a config.json path")
    p.add_argument("--model-dir", default=None, help="local checkpoint folder (default: random weights)")
    p.add_argument("--dtype", choices=[d.value for d in (DType.BF16, DType.FP32)], default="bf16",
                   help="compute dtype (fp32 on a CPU is faster than bf16)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--decode-steps", type=int, default=0, metavar="N",
                   help="also record N decode forwards and print the experts one step hits (default 0)")
    p.add_argument("--out", type=Path, default=None, help="write the counts as JSON here")
    args = p.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
        if args.decode_steps < 0:
            raise UserError(f"--decode-steps {args.decode_steps}: must be >= 0")
        if args.out is not None and not args.out.parent.is_dir():
            raise UserError(f"--out {args.out}: no folder {args.out.parent}")
        settings = SessionSettings(config_name=args.config, model_dir=args.model_dir, mode=args.mode,
                                   prompt="<image>\nFree OCR.", max_new_tokens=1 + args.decode_steps,
                                   batch_size=args.batch_size,
                                   dtype=DType(args.dtype), device=args.device, seed=args.seed)
        counts, decode = routing_calls(settings, args.decode_steps)
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
    if decode:
        print(f"decode, {args.decode_steps} steps of {args.batch_size} rows: per step, mean (min-max)")
        print(f"{'layer':>5} {'pairs':>6} {'experts hit':>15} {'busiest / mean':>14}")
        for layer, steps in decode.items():
            hits = [sum(1 for n in c if n) for c in steps]
            skew = statistics.fmean(max(c) / (sum(c) / len(c)) for c in steps)
            print(f"{layer:>5} {sum(steps[0]):>6} {statistics.fmean(hits):>7.1f} ({min(hits)}-{max(hits)})"
                  f" {skew:>14.1f}")
    if args.out is not None:
        data: dict[str, Any] = {"prefill": {str(k): v for k, v in counts.items()}}
        if decode:
            data.update(decode_steps=args.decode_steps, batch_size=args.batch_size, mode=args.mode,
                        decode={str(k): v for k, v in decode.items()})
        try:
            args.out.write_text(json.dumps(data, indent=1) + "\n")
        except OSError as exc:
            print(f"routing_counts.py: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
