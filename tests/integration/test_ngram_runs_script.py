"""scripts/gpu/ngram_runs.sh on the CPU (tiny config): the census with the ban off, the paired runs, runs.tgz,
and bad SPECS / NGRAMS refused before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from llm_perf_opt.compare.runs import load_run

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu" / "ngram_runs.sh"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "RUNS": str(tmp_path / "runs"),
            "DEVICE": "cpu", "CONFIG": "tiny", "DTYPE": "fp32", "SPECS": "tiny 2;tiny 1 6", "NGRAMS": "0 3",
            "CENSUS": "tiny:1", "TOKENS": "4", "REPEATS": "1", "CEILINGS": "none", "PREFIX": "cpu", **env}
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=full, capture_output=True, text=True, timeout=600)


def test_a_cpu_call_pairs_the_settings_and_packs_the_runs(tmp_path: Path) -> None:
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "out"
    census = json.loads((out / "census-cpu-ngram0.json").read_text())
    assert census["no_repeat_ngram_size"] == 0 and list(census["workloads"]) == ["tiny:1"]
    log = (out / "ngram-runs.txt").read_text()
    assert log.count("exit 0") >= 5 and "worst exit 0" in log  # census, four runs (and their packing)
    with tarfile.open(out / "runs.tgz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    runs = sorted((tmp_path / "unpacked").iterdir())
    # this call's runs, nothing else; the spec with its own tokens carries them in its id and its settings
    assert [r.name.rsplit("-", 1)[0] for r in runs] == [
        "cpu-tiny-b1-t6-ngram0", "cpu-tiny-b1-t6-ngram3", "cpu-tiny-b2-ngram0", "cpu-tiny-b2-ngram3"]
    assert [load_run(r).no_repeat_ngram_size for r in runs] == [0, 3, 0, 3]
    settings = [json.loads(next(r.rglob("settings.json")).read_text()) for r in runs]
    assert [st["session"]["max_new_tokens"] for st in settings] == [6, 6, 4, 4]
    assert {st["profile_images"] for st in settings} == {1}  # PROFILE_IMAGES' default


def test_bad_specs_or_ngrams_stop_before_anything_runs(tmp_path: Path) -> None:
    for env, msg in (({"SPECS": "tiny x"}, "SPECS: 'tiny x' is not 'MODE BATCH [TOKENS]'"),
                     ({"SPECS": "tiny 2 0"}, "SPECS: 'tiny 2 0' is not 'MODE BATCH [TOKENS]'"),
                     ({"SPECS": "tiny 2 8 9"}, "SPECS: 'tiny 2 8 9' is not 'MODE BATCH [TOKENS]'"),
                     ({"NGRAMS": "0 -1"}, "'-1' is not an n-gram size >= 0"),
                     ({"PROFILE_IMAGES": "one"}, "PROFILE_IMAGES: 'one' is not a count")):
        proc = _run(tmp_path, **env)
        assert proc.returncode == 2 and msg in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()
