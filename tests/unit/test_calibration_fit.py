"""Calibration fit recovers known efficiencies from synthetic measurements."""

from __future__ import annotations

import numpy as np
import pytest

from llm_perf_opt.analytic.calibration import Calibration
from llm_perf_opt.compare.fit import FitError, Observation, WorkCell, fit_efficiencies, predict
from llm_perf_opt.compare.nnls import nnls

PEAK = 989e12  # any positive numbers: the fit is relative to them
BW = 3.35e12

TRUE = Calibration(
    gpu_key="synthetic",
    compute_efficiencies={"gemm": 0.72, "attention": 0.41, "norm": 0.2, "moe_experts": 0.55},
    bandwidth_efficiencies={"gemm": 0.83, "attention": 0.6, "norm": 0.5, "moe_experts": 0.66},
    launch_overhead_s=6e-6,
    kernel_floor_s=1.5e-6,
)


def _cells() -> list[WorkCell]:
    rng = np.random.default_rng(7)
    cells = []
    for run in ("r1", "r2"):
        for stage, intensity in (("vision.sam", 400.0), ("prefill", 150.0), ("decode", 2.0)):
            for cat in ("gemm", "attention", "norm", "moe_experts"):
                scale = 1.0 if run == "r1" else 2.5
                nbytes = float(rng.uniform(1e8, 1e9)) * scale
                ai = intensity * float(rng.uniform(0.5, 2.0))
                cells.append(WorkCell(run_id=run, stage=stage, category=cat, compute_s=nbytes * ai / PEAK,
                                      memory_s=nbytes / BW, kernels=float(rng.integers(10, 400))))
    return cells


def _observations(cells: list[WorkCell]) -> list[Observation]:
    obs = []
    for run in ("r1", "r2"):
        for stage in ("vision.sam", "prefill", "decode"):
            o = Observation(run_id=run, stage=stage, measured_s=1.0)
            obs.append(Observation(run_id=run, stage=stage, measured_s=predict(cells, o, TRUE)))
            for cat in ("gemm", "attention", "norm", "moe_experts"):
                d = Observation(run_id=run, stage=stage, categories=cat, measured_s=1.0, include_launch=False)
                obs.append(Observation(run_id=run, stage=stage, categories=cat, include_launch=False,
                                       measured_s=predict(cells, d, TRUE)))
    return obs


def test_nnls_matches_unconstrained_when_solution_positive() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    x_true = np.array([0.5, 3.0])
    assert np.allclose(nnls(a, a @ x_true), x_true)
    # a negative unconstrained optimum is clipped to zero
    x = nnls(np.eye(2), np.array([-1.0, 2.0]))
    assert np.allclose(x, [0.0, 2.0])


def test_fit_recovers_known_efficiencies() -> None:
    cells = _cells()
    obs = _observations(cells)
    result = fit_efficiencies(cells, obs)
    for cat, eff in TRUE.compute_efficiencies.items():
        assert result.compute_efficiencies[cat] == pytest.approx(eff, rel=1e-4), cat
    for cat, eff in TRUE.bandwidth_efficiencies.items():
        assert result.bandwidth_efficiencies[cat] == pytest.approx(eff, rel=1e-4), cat
    assert result.launch_overhead_s == pytest.approx(TRUE.launch_overhead_s, rel=1e-4)
    assert result.kernel_floor_s == pytest.approx(TRUE.kernel_floor_s, rel=1e-4)
    assert result.rms_relative_error_after < 1e-5 < result.rms_relative_error_before
    assert result.unidentified == ()


def test_fit_reports_unconstrained_parameters() -> None:
    cells = [c for c in _cells() if c.stage == "decode"]  # memory-bound only: compute side unknown
    obs = [o for o in _observations(_cells()) if o.stage == "decode"]
    result = fit_efficiencies(cells, obs)
    assert "compute_efficiency[gemm]" in result.unidentified
    assert result.bandwidth_efficiencies["gemm"] == pytest.approx(0.83, rel=1e-4)


def test_fit_without_matching_observation_is_user_error() -> None:
    with pytest.raises(FitError, match="no measured time"):
        fit_efficiencies(_cells(), [Observation(run_id="other", measured_s=1.0)])


def test_shared_fit_recovers_one_efficiency_pair() -> None:
    truth = Calibration(gpu_key="synthetic", default_compute_efficiency=0.6, default_bandwidth_efficiency=0.75,
                        launch_overhead_s=3e-6)
    cells = _cells()
    obs = [Observation(run_id=o.run_id, stage=o.stage, categories=o.categories, include_launch=o.include_launch,
                       measured_s=predict(cells, o, truth)) for o in _observations(cells) if o.categories is None]
    result = fit_efficiencies(cells, obs, shared=True)
    assert list(result.compute_efficiencies.values()) == pytest.approx([0.6] * 4, rel=1e-4)
    assert list(result.bandwidth_efficiencies.values()) == pytest.approx([0.75] * 4, rel=1e-4)
    assert result.launch_overhead_s == pytest.approx(3e-6, rel=1e-4)


def test_per_stage_launch_costs_are_recovered() -> None:
    truth = Calibration(gpu_key="synthetic", compute_efficiencies=TRUE.compute_efficiencies,
                        bandwidth_efficiencies=TRUE.bandwidth_efficiencies, launch_overhead_s=0.0,
                        stage_launch_overhead_s={"vision.sam": 40e-6, "prefill": 4e-6, "decode": 20e-6})
    cells = _cells()
    obs = [Observation(run_id=o.run_id, stage=o.stage, categories=o.categories, include_launch=o.include_launch,
                       measured_s=predict(cells, o, truth)) for o in _observations(cells)]
    result = fit_efficiencies(cells, obs, per_stage_launch=True)
    assert result.stage_launch_overhead_s == pytest.approx(truth.stage_launch_overhead_s, rel=1e-4)
    assert result.compute_efficiencies["gemm"] == pytest.approx(0.72, rel=1e-4)
    # the single launch cost cannot explain stage-specific costs
    single = fit_efficiencies(cells, obs)
    assert single.rms_relative_error_after > 100 * result.rms_relative_error_after
