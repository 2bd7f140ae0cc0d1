"""scripts/analytical/probe_choice.sh on run sets of another GPU prefix: fit on one set's Base b1 and Gundam b1,
evaluate every run of another set (CPU only; two committed H200 sets renamed with an h100 prefix)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from llm_perf_opt.analytic.calibration import load_calibration

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "reports" / "profile"
FIT, EVAL = "20261204T141251Z", "20261204T142146Z"  # sets 16 and 17 (docs/results-h200.md section 19)


def _renamed(dst: Path, stamp: str, prefix: str) -> list[str]:
    names = []
    for run in sorted(RUNS.glob(f"h200-*-{stamp}")):
        name = prefix + run.name[len("h200"):]
        shutil.copytree(run, dst / name)
        names.append(name)
    return names


def test_a_fit_on_one_prefixed_set_evaluates_the_other(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    fitted = _renamed(profile, FIT, "h100")
    evaluated = _renamed(profile, EVAL, "h100")
    assert len(fitted) == len(evaluated) == 5
    out = tmp_path / "out"
    env = {**os.environ, "RUN_PREFIX": "h100", "PROFILE_DIR": str(profile), "OUT": str(out), "VARIANTS": "add:1",
           "PYTHON": sys.executable, "CEILINGS": str(ROOT / "reports" / "hardware" / "h200" / "hw-ceilings.json")}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "analytical" / "probe_choice.sh"), FIT, EVAL], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = out / f"fit-{FIT}-eval-{EVAL}-add-1"
    assert (folder / "calibration.json").is_file()
    # fitted on Base b1 and Gundam b1, the set's Small b1 and Base b4 held out (run ids: the runs' own, h200-...)
    fit = load_calibration(folder / "calibration.json").fit
    assert sorted(fit.fitted_runs) == [f"h200-base-b1-{FIT}", f"h200-gundam-b1-{FIT}"]
    assert sorted(fit.held_out_runs) == [f"h200-base-b4-{FIT}", f"h200-small-b1-{FIT}"]
    for name in evaluated:  # every run of the other set compared with the fit
        assert (folder / name / "compare" / "compare.json").is_file(), name
        assert (folder / name / "unified_report.json").is_file(), name
    assert f"fitted on set {FIT}, evaluated on set {EVAL}" in done.stdout
    assert all(f"| {name} |" in done.stdout for name in evaluated)  # the cross table, by folder
    assert "all stages: " in done.stdout and " within 10% (rms " in done.stdout
    # without the prefix's run folders: one line naming the folder it looked for
    env["RUN_PREFIX"] = "a100"
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "analytical" / "probe_choice.sh"), FIT, EVAL], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and f"no run folder {profile}/a100-base-b1-{FIT}" in bad.stderr
