"""scripts/analytical/rebuild_profile_reports.sh on copies of committed run folders (CPU only), and the committed
reports as this version builds them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llm_perf_opt.runners.rebuild_cli import main
from llm_perf_opt.vocab import Stage

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "reports" / "profile"
SCRIPT = ROOT / "scripts" / "analytical" / "rebuild_profile_reports.sh"
#: one run of each ceilings file the script knows: the H100's, the first H200 session's, the later H200 one's
#: (Small b64, whose batch-1-per-page work once counted the weights 64 times over)
H100_RUN = "h100-small-b1-20261122T054520Z"
H200_FIRST_RUN = "h200-base-b1-20261202T012852Z"
B64_RUN = "h200-small-b64-ngram20-20261204T210208Z"


def _metrics(run: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run / "torch_profiler" / "metrics.json").read_text())


def _script(profile: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROFILE_DIR": str(profile), "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)


def test_the_script_rebuilds_each_run_with_its_own_ceilings(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    for name in (H100_RUN, H200_FIRST_RUN, B64_RUN):
        shutil.copytree(RUNS / name, profile / name)
    report = profile / B64_RUN / "torch_profiler" / "report.md"
    done = _script(profile)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == (f"== 3 run folders rebuilt under {profile}; every report names "
                                                     "the peaks it named before")
    assert "h200`, 673.4 TFLOP/s dense, 4.27 TB/s" in (profile / H200_FIRST_RUN / "torch_profiler" / "report.md"
                                                        ).read_text()
    assert report.read_text().count("reports rebuilt ") == 1
    # run twice: the same figures (only the note's time may differ)
    first = _metrics(profile / B64_RUN)
    assert _script(profile).returncode == 0
    second = _metrics(profile / B64_RUN)
    first.pop("notes"), second.pop("notes")
    assert first == second
    # a folder that cannot be rebuilt: its line, the other folders still rebuilt, the check still run, status 1
    (profile / H100_RUN / "torch_profiler" / "settings.json").write_text("{")
    failed = _script(profile)
    assert failed.returncode == 1
    assert f"{H100_RUN}/torch_profiler/settings.json: not valid JSON" in failed.stderr
    assert failed.stderr.strip().splitlines()[-1] == (f"{SCRIPT}: not every run folder was rebuilt as it should be "
                                                      "(above)")
    assert f"{B64_RUN}: rebuilt: MFU/MBU unchanged" in failed.stdout
    shutil.rmtree(profile / H100_RUN)
    # a report naming ceilings the script does not know: one line, nothing rebuilt
    text = report.read_text().replace("683.8 TFLOP/s dense", "999.9 TFLOP/s dense")
    report.write_text(text)
    bad = _script(profile)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (f"{SCRIPT}: {profile}/{B64_RUN}: its report.md names no ceilings this script "
                                  "knows (Measured ceilings (hw bench): GPU `h200`, 999.9 TFLOP/s dense, 4.25 TB/s)")


#: committed runs rebuilt in a copy: Small b64, a run of the first H200 ceilings, the interrupted Small b320 run
#: (320 pages skipped), a run without a profiler pass (no operator table) and an H100 run of 2026-12-05 (its
#: own session's ceilings)
REBUILT = [B64_RUN, H200_FIRST_RUN, "h200-small-b320-t1024-ngram0-20261205T041442Z",
           "h200-small-b128-t1024-ngram20-20261205T041912Z", "h100-small-b4-20261205T133904Z"]
#: the ceilings each was profiled against, where not the H200's current ones
CEILINGS = {H200_FIRST_RUN: "reports/hardware/h200/hw-ceilings-20261202T012926Z.json",
            REBUILT[4]: "reports/hardware/h100/hw-ceilings-20261205T133904Z.json"}


@pytest.mark.parametrize("name", REBUILT)
def test_committed_reports_are_what_this_version_builds(name: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A committed run's metrics.json is what this version builds from the run's files, its notes aside (after a
    change to the analytic model's work, scripts/analytical/rebuild_profile_reports.sh brings them up to date)."""
    ceilings = CEILINGS.get(name, "reports/hardware/h200/hw-ceilings.json")
    run = tmp_path / name
    shutil.copytree(RUNS / name, run)
    rc = main([str(run), "--no-plots", "--ceilings", str(ROOT / ceilings)])
    out = capsys.readouterr().out
    assert rc == 0 and out.strip() == f"{name}: rebuilt: MFU/MBU unchanged"
    committed, rebuilt = _metrics(RUNS / name), _metrics(run)
    notes = [n for n in rebuilt.pop("notes") if not n.startswith("reports rebuilt ")]
    assert notes == [n for n in committed.pop("notes") if not n.startswith("reports rebuilt ")]
    assert rebuilt == committed
    if name == B64_RUN:  # 64 pages of one layout are one batch-64 workload: the decode reads the weights once a step
        assert rebuilt["stage_mbu"][Stage.DECODE.value] < 0.10
    if name == REBUILT[2]:
        assert len(rebuilt["skipped_images"]) == 320 and any(n.startswith("run interrupted") for n in notes)
    if name == REBUILT[3]:
        assert rebuilt["operators"] == [] and not (run / "torch_profiler" / "operator_table.json").exists()


def test_ceilings_of_another_gpu_than_the_run_s_are_refused(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A copy of an H100 run (no --gpu in its command: the GPU is its env.json's) with the H200's ceilings: one
    line, and the folder is left as it is."""
    run = tmp_path / H100_RUN
    shutil.copytree(RUNS / H100_RUN, run)
    rc = main([str(run), "--ceilings", str(ROOT / "reports" / "hardware" / "h200" / "hw-ceilings.json")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "were measured on 'h200', not on the run's GPU 'h100-sxm'" in err
    assert _metrics(run) == _metrics(RUNS / H100_RUN)
