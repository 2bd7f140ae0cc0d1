"""Host-speed probes on a CUDA GPU (run with -m gpu)."""

from __future__ import annotations

import time

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_the_module_probe_times_the_host_on_the_decoder_code_path() -> None:
    from llm_perf_opt.models.deepseek_ocr.modeling import tiny_decoder_program
    from llm_perf_opt.profiling.timers import ModuleHostProbe, host_probe_us

    dev = torch.device("cuda")
    for impl in ("grouped_mm", "eager"):
        probe = ModuleHostProbe(tiny_decoder_program(device=dev, experts_implementation=impl), dev)
        us = probe.probe(reps=5)
        add = host_probe_us(dev)
        # a few us to tens of us per aten call, of the order of the add probe (both host issue costs)
        assert probe.ops > 100 and 0.5 < us < 200, (impl, probe.ops, us)
        assert 0.2 < us / add < 20, (impl, us, add)
        # the forward's kernels are tiny: the synced wall time of a forward is within 3x its host time
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        probe.fn()
        torch.cuda.synchronize()
        wall_us = (time.perf_counter() - t0) * 1e6
        assert wall_us < 3 * us * probe.ops + 200, (impl, wall_us, us * probe.ops)
