"""profiling.mfu.drop_implausible: figures outside the bound go, and so do the sums over their stages."""

from __future__ import annotations

from llm_perf_opt.profiling.mfu import Peaks, Utilization, drop_implausible
from llm_perf_opt.vocab import Stage


def test_a_stage_outside_the_bound_takes_the_sums_over_it() -> None:
    peaks = Peaks(gpu_key="h200", flops_per_s=1e15, bytes_per_s=4e12, origin="datasheet")
    u = Utilization(peaks=peaks, stage_mfu={Stage.DECODE: 0.01, Stage.VISION_SAM: 0.3},
                    stage_mbu={Stage.DECODE: 4.05, Stage.PREFILL: 0.5, Stage.VISION_SAM: 0.2},
                    model_mfu=0.02, model_mbu=1.2, vision_mfu=0.3)
    notes = drop_implausible(u, 1.5)
    assert u.stage_mbu == {Stage.PREFILL: 0.5, Stage.VISION_SAM: 0.2}  # the decode's bytes do not fit
    assert u.model_mbu is None  # it sums the decode's bytes, although 120% is inside the bound
    assert u.model_mfu == 0.02 and u.vision_mfu == 0.3 and u.stage_mfu[Stage.DECODE] == 0.01  # FLOPs fit
    assert notes == ["MBU of decode 405% of the datasheet peak is outside [0, 150%]: the analytic work does not "
                     "fit this run's passes; left out",
                     "MBU of the model 120% sums the work of decode; left out with it"]
    u = Utilization(peaks=peaks, stage_mfu={Stage.VISION_CLIP: -0.1}, vision_mfu=0.2, model_mfu=2.0)
    drop_implausible(u, 1.5)
    assert u.vision_mfu is None and u.model_mfu is None and u.stage_mfu == {}
