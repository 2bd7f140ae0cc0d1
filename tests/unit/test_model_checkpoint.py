"""Synthetic checkpoints in the official key layout: load, spot-check values, refuse bad folders."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from llm_perf_opt.models.deepseek_ocr import (
    CheckpointError,
    DeepseekOCRConfig,
    build_model,
    export_official_state_dict,
    load_pretrained,
    official_state_dict_keys,
)
from llm_perf_opt.runners.model_cli import main as model_main

TINY = DeepseekOCRConfig.tiny()


def official_random_tensors(seed: int = 1) -> dict[str, torch.Tensor]:
    """Random fp32 tensors under the official names/shapes of the tiny config (independent of loading)."""
    gen = torch.Generator().manual_seed(seed)
    keys = official_state_dict_keys(build_model(TINY, device="meta"))
    return {name: torch.randn(shape, generator=gen) for name, shape in keys.items()}


def write_folder(path, tensors, *, sharded=False):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(TINY.to_published_dict()))
    if not sharded:
        save_file(tensors, str(path / "model.safetensors"))
        return path
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, group in shards.items():
        save_file({n: tensors[n] for n in group}, str(path / fname))
        weight_map.update({n: fname for n in group})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


@pytest.fixture(scope="module")
def tensors():
    return official_random_tensors()


@pytest.mark.parametrize("sharded", [False, True])
def test_synthetic_checkpoint_loads_exact_values(tmp_path, tensors, sharded):
    folder = write_folder(tmp_path / "ckpt", tensors, sharded=sharded)
    model = load_pretrained(folder, device="cpu", dtype=torch.float32)
    lang = model.model.language
    inter = TINY.language.moe_intermediate_size
    width = TINY.clip.width
    # one expert's packed slices
    experts = lang.layers[2].mlp.experts
    assert torch.equal(experts.gate_up_proj[5, :inter], tensors["model.layers.2.mlp.experts.5.gate_proj.weight"])
    assert torch.equal(experts.gate_up_proj[5, inter:], tensors["model.layers.2.mlp.experts.5.up_proj.weight"])
    assert torch.equal(experts.down_proj[5], tensors["model.layers.2.mlp.experts.5.down_proj.weight"])
    # CLIP q/k/v split of the fused qkv_proj
    attn = model.model.vision_model.transformer.layers[1].self_attn
    qkv_w = tensors["model.vision_model.transformer.layers.1.self_attn.qkv_proj.weight"]
    qkv_b = tensors["model.vision_model.transformer.layers.1.self_attn.qkv_proj.bias"]
    for i, proj in enumerate((attn.q_proj, attn.k_proj, attn.v_proj)):
        assert torch.equal(proj.weight, qkv_w[i * width:(i + 1) * width])
        assert torch.equal(proj.bias, qkv_b[i * width:(i + 1) * width])
    # renamed SAM tensors and plain ones
    sam = model.model.sam_model
    assert torch.equal(sam.layers[1].layer_norm1.weight, tensors["model.sam_model.blocks.1.norm1.weight"])
    assert torch.equal(sam.neck.layer_norm2.bias, tensors["model.sam_model.neck.3.bias"])
    assert torch.equal(sam.proj.conv2.weight, tensors["model.sam_model.net_3.weight"])
    assert torch.equal(lang.embed_tokens.weight, tensors["model.embed_tokens.weight"])
    assert torch.equal(model.model.view_seperator, tensors["model.view_seperator"])
    assert torch.equal(model.lm_head.weight, tensors["lm_head.weight"])
    # and every tensor round-trips through the inverse mapping
    back = export_official_state_dict(model)
    assert set(back) == set(tensors)
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)


def test_loaded_expert_computes_official_swiglu(tmp_path, tensors):
    """Expert 3 of layer 1 through transformers' packed experts == down(silu(gate x) * up x) on official tensors."""
    model = load_pretrained(write_folder(tmp_path / "c", tensors), device="cpu", dtype=torch.float32)
    x = torch.randn(4, TINY.language.hidden_size, generator=torch.Generator().manual_seed(2))
    experts = model.model.language.layers[1].mlp.experts
    got = experts(x, torch.full((4, 1), 3), torch.ones(4, 1))
    g, u, d = (tensors[f"model.layers.1.mlp.experts.3.{p}.weight"] for p in ("gate_proj", "up_proj", "down_proj"))
    want = (torch.nn.functional.silu(x @ g.T) * (x @ u.T)) @ d.T
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.detach().abs().max()))


def test_moe_is_softmax_greedy_topk_without_renormalisation(tmp_path, tensors):
    model = load_pretrained(write_folder(tmp_path / "c", tensors), device="cpu", dtype=torch.float32)
    moe = model.model.language.layers[1].mlp
    x = torch.randn(3, TINY.language.hidden_size, generator=torch.Generator().manual_seed(1))
    scores = torch.softmax(x @ tensors["model.layers.1.mlp.gate.weight"].T, dim=-1)
    top_w, top_i = scores.topk(TINY.language.num_experts_per_tok, dim=-1)
    want = moe.shared_experts(x)
    for t in range(3):
        for w, e in zip(top_w[t], top_i[t], strict=True):
            want[t] += w * moe.experts(x[t:t + 1], e.view(1, 1), torch.ones(1, 1))[0]
    # float32 sums in another order (grouped GEMM vs one expert at a time): entries near zero differ by
    # up to ~3e-7 of the output's scale, so the absolute tolerance is relative to that scale
    torch.testing.assert_close(moe(x.unsqueeze(0))[0], want, rtol=1e-4, atol=1e-5 * float(want.detach().abs().max()))


def test_folder_without_weights_is_refused(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY.to_published_dict()))
    with pytest.raises(CheckpointError, match=r"no model\.safetensors or model\.safetensors\.index\.json"):
        load_pretrained(folder)


def test_wrong_tensors_are_named_and_refused(tmp_path, tensors):
    bad = dict(tensors)
    del bad["model.layers.1.mlp.experts.4.up_proj.weight"]
    bad["model.extra.weight"] = torch.zeros(2)
    bad["model.projector.layers.bias"] = torch.zeros(7)
    folder = write_folder(tmp_path / "bad", bad)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(folder)
    msg = str(err.value)
    assert "\n" not in msg and "load refused" in msg
    assert "1 missing: model.layers.1.mlp.experts.4.up_proj.weight" in msg
    assert "1 unexpected: model.extra.weight" in msg
    assert "1 mis-shaped: model.projector.layers.bias [7] != [64]" in msg


def test_corrupt_weights_file_is_one_line(tmp_path, capsys):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY.to_published_dict()))
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_pretrained(folder)
    assert model_main(["summary", "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing" in err
