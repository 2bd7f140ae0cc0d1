"""scripts/gpu/model_smoke.py must work first time on the GPU: run it here on CPU with the tiny config."""

from __future__ import annotations


def test_gpu_smoke_script_runs_on_cpu(tmp_path, monkeypatch, capsys):
    import json

    from script_loader import load_script

    mod = load_script("gpu/model_smoke.py")
    monkeypatch.setenv("OUT", str(tmp_path))
    argv = ["--config", "tiny", "--device", "cpu", "--modes", "small,gundam", "--new-tokens", "3",
            "--repeats", "1", "--warmup", "0", "--dtype", "fp32"]
    assert mod.main(argv) == 0
    result = json.loads((tmp_path / "model_smoke.json").read_text())
    assert [r["mode"] for r in result["results"]] == ["small", "gundam"]
    gundam = result["results"][1]
    assert gundam["tile_grid"] == [3, 2] and gundam["prompt_slots"] == 273 + 30 * 21
    assert all(r["prefill_ms"] > 0 and r["decode_ms_per_token"] > 0 and len(r["prefill_ms_all"]) == 1
               for r in result["results"])
    assert "prefill ms" in capsys.readouterr().out
