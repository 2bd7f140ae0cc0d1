"""Meta build of DeepSeek-OCR v1 against the official tensor list (tests/data/official-tensors.tsv)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from llm_perf_opt.models.deepseek_ocr import (
    DeepseekOCRConfig,
    build_model,
    official_state_dict_keys,
    official_to_module,
    parameter_summary,
)

DATA = Path(__file__).resolve().parents[1] / "data"


def official_tensors() -> dict[str, tuple[int, ...]]:
    with open(DATA / "official-tensors.tsv") as f:
        return {r["name"]: tuple(int(x) for x in r["shape"].split("x")) for r in csv.DictReader(f, delimiter="\t")}


@pytest.fixture(scope="module")
def meta_model():
    return build_model(device="meta")


def test_meta_model_uses_no_memory(meta_model):
    assert all(p.device.type == "meta" for p in meta_model.parameters())
    assert all(p.dtype == torch.bfloat16 for p in meta_model.parameters())


def test_official_key_set_and_shapes_equal_tensor_list(meta_model):
    expected = official_tensors()
    got = official_state_dict_keys(meta_model)
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if expected[k] != v} == {}


def test_parameter_count_equals_tensor_list(meta_model):
    total = 0
    for shape in official_tensors().values():
        n = 1
        for d in shape:
            n *= d
        total += n
    assert sum(p.numel() for p in meta_model.parameters()) == total
    summary = parameter_summary(meta_model)
    assert summary["total"] == total
    assert sum(v for k, v in summary.items() if k != "total") == total
    assert summary["embedding"] == summary["lm_head"]


def test_full_size_mapping_covers_every_parameter_once(meta_model):
    """Each official tensor maps to module slices whose shapes rebuild it; every element is covered once."""
    params = dict(meta_model.named_parameters())
    covered = {k: 0 for k in params}
    for name, shape in official_tensors().items():
        slices = official_to_module(name, meta_model.config)
        source = torch.empty(shape, device="meta")
        rows = 0
        for s in slices:
            target = params[s.module_key]
            part = target[s.index] if s.index is not None else target
            src = source[s.source_rows] if s.source_rows is not None else source
            assert part.shape == src.shape, name
            rows += src.shape[0]
            covered[s.module_key] += part.numel()
        assert rows == shape[0], name
    assert {k: v for k, v in covered.items() if v != params[k].numel()} == {}


def test_module_paths(meta_model):
    m = meta_model.model
    lang = m.language
    cfg = meta_model.config.language
    for path in ("model.sam_model", "model.vision_model", "model.projector", "model.language.embed_tokens",
                 "model.language.norm", "lm_head", "model.language.layers.0.self_attn",
                 "model.language.layers.0.mlp.gate_proj", "model.language.layers.1.mlp.gate",
                 "model.language.layers.1.mlp.experts", "model.language.layers.1.mlp.shared_experts",
                 "model.vision_model.transformer.layers.23.self_attn.q_proj"):
        meta_model.get_submodule(path)
    assert m.image_newline.shape == (cfg.hidden_size,)
    assert m.view_seperator.shape == (cfg.hidden_size,)
    assert len(lang.layers) == cfg.num_hidden_layers
    experts = lang.layers[1].mlp.experts
    assert experts.gate_up_proj.shape == (cfg.n_routed_experts, 2 * cfg.moe_intermediate_size, cfg.hidden_size)
    router = lang.layers[1].mlp.gate
    assert router.top_k == cfg.num_experts_per_tok and router.topk_method == "greedy"
    assert router.routed_scaling_factor == 1.0


def test_tiny_config_has_the_same_structure():
    """Tiny differs in sizes and counts only: the official key patterns (indices as N) are the same."""
    import re

    def patterns(names):
        return {re.sub(r"\.\d+\.", ".N.", re.sub(r"\.\d+\.", ".N.", n)) for n in names}

    tiny = official_state_dict_keys(build_model(DeepseekOCRConfig.tiny(), device="meta"))
    assert patterns(tiny) == patterns(official_tensors())


def test_config_round_trips_through_published_layout(tmp_path):
    import json

    tiny = DeepseekOCRConfig.tiny()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(tiny.to_published_dict()))
    back = DeepseekOCRConfig.from_json_file(path)
    assert back.sam == tiny.sam and back.clip == tiny.clip and back.language == tiny.language
    assert DeepseekOCRConfig.from_dict(DeepseekOCRConfig.default().to_published_dict()).language == \
        DeepseekOCRConfig.default().language


def test_bad_implementation_names_are_user_errors():
    from llm_perf_opt.errors import UserError

    with pytest.raises(UserError, match="attn_implementation 'flash'"):
        build_model(DeepseekOCRConfig.tiny(), attn_implementation="flash")


def test_random_build_is_seeded_and_buffers_are_real():
    tiny = DeepseekOCRConfig.tiny()
    a = build_model(tiny, device="cpu", dtype=torch.float32, seed=3)
    b = build_model(tiny, device="cpu", dtype=torch.float32, seed=3)
    c = build_model(tiny, device="cpu", dtype=torch.float32, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["lm_head.weight"], sc["lm_head.weight"])
    assert torch.all(a.model.language.norm.weight == 1) and torch.all(a.model.sam_model.neck.layer_norm1.bias == 0)
    rot = a.model.language.rotary_emb
    dim = tiny.language.head_dim
    want = 1.0 / (tiny.language.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    assert rot.inv_freq.dtype == torch.float32
    torch.testing.assert_close(rot.inv_freq, want)
    bf16 = build_model(tiny, device="cpu", dtype=torch.bfloat16)
    assert bf16.lm_head.weight.dtype == torch.bfloat16
    assert bf16.model.language.rotary_emb.inv_freq.dtype == torch.float32
