"""How the routing's skew changes a routed-experts call's device time (CUDA GPU).

The bench times ``experts_grouped_mm@ExKxTxHxI`` on N(0, 1) hidden states, which the random router
spreads over every expert. The model with random weights routes its prefill tokens (image tokens that
differ little) to a few experts: 27-41 of 64 hit, the busiest getting ~10x the mean, in Base b1's
prefill. This times the same call, with the same module and weights, on hidden states that share a
common direction (x = c + s * noise, c one random token, for several s), and prints for each the
experts hit, the busiest expert's share of the pairs and the device time per call (the bench's timer).

    PYTHONPATH=src python scripts/gpu/experts_routing_check.py --out experts-routing.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from llm_perf_opt.hardware.gemms import CALL_KIND_CALLS, queued_cuda_timer
from llm_perf_opt.models.deepseek_ocr.modeling import moe_layer

#: noise scales around the common token: 0 = every token the same, large = the bench's i.i.d. tokens
SCALES = (0.0, 0.3, 0.5, 0.7, 1.0, 3.0, None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--tokens", type=int, nargs="+", default=[282, 1128], help="token counts T (default 282 1128)")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per case, median kept (default 7)")
    args = p.parse_args(argv)
    if min(args.tokens) < 1 or args.repeats < 1:
        p.error("--tokens and --repeats must be >= 1")
    if not torch.cuda.is_available():
        print("experts_routing_check.py: needs a CUDA GPU", file=sys.stderr)
        return 2
    dev = "cuda"
    moe = moe_layer(experts=64, top_k=6, hidden=1280, intermediate=896, device=dev, dtype=torch.bfloat16, seed=0)
    router, experts = moe.get_submodule("gate"), moe.get_submodule("experts")
    gen = torch.Generator(device=dev).manual_seed(1)
    rows = []
    print(f"{'T':>5} {'noise':>6} {'experts hit':>11} {'busiest share':>13} {'us/call':>9}")
    for t in args.tokens:
        common = torch.randn(1, 1280, generator=gen, device=dev)
        for scale in SCALES:
            noise = torch.randn(t, 1280, generator=gen, device=dev)
            x = (noise if scale is None else common + scale * noise).to(torch.bfloat16)
            with torch.no_grad():
                _logits, weights, index = router(x)
            counts = torch.bincount(index.reshape(-1), minlength=64)

            def call(x: torch.Tensor = x, index: torch.Tensor = index, weights: torch.Tensor = weights) -> None:
                with torch.no_grad():
                    experts(x, index, weights)

            call()
            torch.cuda.synchronize()
            us = statistics.median(queued_cuda_timer(call, CALL_KIND_CALLS) for _ in range(args.repeats)) * 1e6
            row = {"tokens": t, "noise_scale": scale, "experts_hit": int((counts > 0).sum()),
                   "busiest_share": float(counts.max() / counts.sum()), "us_per_call": us}
            rows.append(row)
            label = "iid" if scale is None else f"{scale:g}"
            print(f"{t:>5} {label:>6} {row['experts_hit']:>11} {row['busiest_share']:>13.3f} {us:>9.1f}")
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                    "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
