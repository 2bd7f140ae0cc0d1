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
    # a report naming ceilings the script does not know: one line, nothing rebuilt
    text = report.read_text().replace("683.8 TFLOP/s dense", "999.9 TFLOP/s dense")
    report.write_text(text)
    bad = _script(profile)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (f"{SCRIPT}: {profile}/{B64_RUN}: its report.md names no ceilings this script "
                                  "knows (Measured ceilings (hw bench): GPU `h200`, 999.9 TFLOP/s dense, 4.25 TB/s)")


@pytest.mark.parametrize("name", [B64_RUN, H200_FIRST_RUN])
def test_committed_reports_are_what_this_version_builds(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The committed metrics.json holds the MFU/MBU this version computes from the run's files (after a change to
    the analytic model, scripts/analytical/rebuild_profile_reports.sh brings them up to date)."""
    ceilings = ("reports/hardware/h200/hw-ceilings-20261202T012926Z.json" if name == H200_FIRST_RUN
                else "reports/hardware/h200/hw-ceilings.json")
    rc = main([str(RUNS / name), "--dry-run", "--ceilings", str(ROOT / ceilings)])
    out = capsys.readouterr().out
    assert rc == 0 and out.strip() == f"{name}: would be rebuilt: MFU/MBU unchanged"
    if name == B64_RUN:  # 64 pages of one layout are one batch-64 workload: the decode reads the weights once a step
        assert _metrics(RUNS / name)["stage_mbu"][Stage.DECODE.value] < 0.10
