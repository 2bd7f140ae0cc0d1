"""`llm-perf-opt model summary|tokens` and `llm-perf-opt torchinfo`."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from PIL import Image

from llm_perf_opt.runners import model_cli, torchinfo_report

DATA = Path(__file__).resolve().parents[1] / "data"


def tsv_total() -> int:
    with open(DATA / "official-tensors.tsv") as f:
        return sum(math.prod(int(x) for x in r["shape"].split("x")) for r in csv.DictReader(f, delimiter="\t"))


def test_summary_json_default(capsys):
    assert model_cli.main(["summary", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    counts = out["parameters"]
    assert counts["total"] == tsv_total()
    assert [k for k in counts if k.startswith("decoder.layers.")] == [f"decoder.layers.{i}" for i in range(12)]
    assert counts["decoder.layers.1"] > counts["decoder.layers.0"]


def test_summary_table_from_model_folder(tmp_path, capsys):
    from llm_perf_opt.models.deepseek_ocr import DeepseekOCRConfig

    (tmp_path / "config.json").write_text(json.dumps(DeepseekOCRConfig.tiny().to_published_dict()))
    assert model_cli.main(["summary", "--model", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "decoder.layers.2" in out and "decoder.layers.3" not in out


def test_tokens_for_size_and_image(tmp_path, capsys):
    assert model_cli.main(["tokens", "--mode", "gundam", "--image-size", "1700x2200", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows, cols = out["tile_grid"]["rows"], out["tile_grid"]["cols"]
    assert out["prompt_slots"] == 273 + (10 * rows) * (10 * cols + 1)
    assert out["valid_tokens"] <= out["nominal_tokens"]
    page = tmp_path / "p.png"
    Image.new("RGB", (500, 400)).save(page)
    assert model_cli.main(["tokens", "--mode", "gundam", "--image", str(page)]) == 0
    assert "no tiling" in capsys.readouterr().out


def test_tokens_prompt_by_name_or_text(capsys):
    from llm_perf_opt.models.deepseek_ocr.prompt import PROMPTS, synthetic_text_tokens

    counts = {}
    for prompt in ("document", "free_ocr", PROMPTS["free_ocr"]):
        assert model_cli.main(["tokens", "--mode", "base", "--image-size", "1024x1024", "--json",
                               "--prompt", prompt]) == 0
        counts[prompt] = json.loads(capsys.readouterr().out)["text_tokens"]
    assert counts["document"] == synthetic_text_tokens(PROMPTS["document"])
    assert counts["free_ocr"] == counts[PROMPTS["free_ocr"]] == synthetic_text_tokens(PROMPTS["free_ocr"])
    assert counts["free_ocr"] != counts["document"]


def test_bad_inputs_are_one_line(tmp_path, capsys):
    cases = [
        (["tokens", "--mode", "huge", "--image-size", "10x10"], "unknown resolution mode 'huge'"),
        (["tokens", "--mode", "base", "--image-size", "10by10"], "expected WxH"),
        (["tokens", "--mode", "base", "--image", str(tmp_path / "none.png")], "none.png: image file not found"),
        (["summary", "--model", str(tmp_path / "nofolder")], "nofolder"),
        (["tokens", "--mode", "base", "--image-size", "10x10", "--prompt", "no tag"], "exactly one <image> tag"),
        (["tokens", "--mode", "base", "--image", str(tmp_path / "corrupt.png")], "not a readable image"),
    ]
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    for argv, text in cases:
        assert model_cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and text in err, err


def test_torchinfo_report_tiny(tmp_path, capsys):
    assert torchinfo_report.main(["--config", "tiny", "--mode", "small", "--out-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "torchinfo-unique-layers.json").read_text())
    by_class = {r["class"]: r for r in report["layers"]}
    assert by_class["DeepseekOcr2TextDecoderLayer"]["count"] == 3
    assert by_class["DeepseekOcr2TextExperts"]["count"] == 2
    assert by_class["CLIPEncoderLayer"]["example_output_shape"] == [1, 101, 48]
    assert by_class["Projector"]["example_output_shape"] == [1, 100, 64]
    assert "model.vision_model.embeddings.patch_embedding" in report["modules_not_called"]
    md = (tmp_path / "torchinfo-unique-layers.md").read_text()
    assert md.count("\n| `") == len(report["layers"])


def test_committed_torchinfo_report_is_current():
    """reports/torchinfo-unique-layers.json matches what the default config gives now."""
    committed = Path(__file__).resolve().parents[2] / "reports" / "torchinfo-unique-layers.json"
    report = json.loads(committed.read_text())
    assert report["total_params"] == tsv_total()
    assert report["config"] == "default"
