"""Official DeepSeek-OCR checkpoint layout <-> module names, and loading from a local folder.

Official key (``official-tensors.tsv``)                    module key
``model.embed_tokens.* / model.layers.* / model.norm.*``   ``model.language.<same>``
``model.layers.L.mlp.experts.E.gate_proj.weight [I,H]``    ``...experts.gate_up_proj[E, :I]``
``model.layers.L.mlp.experts.E.up_proj.weight   [I,H]``    ``...experts.gate_up_proj[E, I:]``
``model.layers.L.mlp.experts.E.down_proj.weight [H,I]``    ``...experts.down_proj[E]``
``model.sam_model.blocks.i.norm1/norm2``                   ``model.sam_model.layers.i.layer_norm1/2``
``model.sam_model.patch_embed.proj``                       ``model.sam_model.patch_embed.projection``
``model.sam_model.neck.0/1/2/3``                           ``model.sam_model.neck.conv1/layer_norm1/conv2/layer_norm2``
``model.sam_model.net_2 / net_3``                          ``model.sam_model.proj.conv1 / conv2``
``...self_attn.qkv_proj.{weight,bias} [3W(,W)]``           ``...self_attn.{q,k,v}_proj`` rows [0:W), [W:2W), [2W:3W)
everything else                                            same name

The CLIP ``embeddings.patch_embedding.weight`` is loaded into the (unused) module parameter of the
same name: v1 feeds SAM features to CLIP instead of running that conv.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import torch
from attrs import define, field

from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modeling import (
    DeepseekOCRForCausalLM,
    instantiate_on_meta,
    reset_buffers,
)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(UserError):
    """A model folder without weights, or with tensors that do not match the model."""


@define(frozen=True)
class Slice:
    """Where (part of) one official tensor lives: ``official[source_rows]`` is ``module[index]``."""

    module_key: str = field(metadata={"help": "model state-dict key"})
    index: tuple[Any, ...] | None = field(default=None, metadata={"help": "index into the module tensor (None: all)"})
    source_rows: slice | None = field(default=None, metadata={"help": "rows of the official tensor (None: all)"})


_SAM_RENAMES = [
    (re.compile(r"^model\.sam_model\.blocks\.(\d+)\.norm([12])\."), r"model.sam_model.layers.\1.layer_norm\2."),
    (re.compile(r"^model\.sam_model\.blocks\.(\d+)\."), r"model.sam_model.layers.\1."),
    (re.compile(r"^model\.sam_model\.patch_embed\.proj\."), "model.sam_model.patch_embed.projection."),
    (re.compile(r"^model\.sam_model\.neck\.0\."), "model.sam_model.neck.conv1."),
    (re.compile(r"^model\.sam_model\.neck\.1\."), "model.sam_model.neck.layer_norm1."),
    (re.compile(r"^model\.sam_model\.neck\.2\."), "model.sam_model.neck.conv2."),
    (re.compile(r"^model\.sam_model\.neck\.3\."), "model.sam_model.neck.layer_norm2."),
    (re.compile(r"^model\.sam_model\.net_2\."), "model.sam_model.proj.conv1."),
    (re.compile(r"^model\.sam_model\.net_3\."), "model.sam_model.proj.conv2."),
]
_LANG = re.compile(r"^model\.(embed_tokens|layers|norm)\.")
_EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
_QKV = re.compile(r"^(model\.vision_model\.transformer\.layers\.\d+\.self_attn\.)qkv_proj\.(weight|bias)$")


def official_to_module(official: str, config: DeepseekOCRConfig) -> list[Slice]:
    """Module slices holding one official tensor (three for a fused CLIP qkv_proj, else one)."""
    m = _EXPERT.match(official)
    if m:
        layer, expert, proj = m.group(1), int(m.group(2)), m.group(3)
        inter = config.language.moe_intermediate_size
        base = f"model.language.layers.{layer}.mlp.experts."
        if proj == "down_proj":
            return [Slice(base + "down_proj", (expert,))]
        rows = slice(0, inter) if proj == "gate_proj" else slice(inter, 2 * inter)
        return [Slice(base + "gate_up_proj", (expert, rows))]
    m = _QKV.match(official)
    if m:
        width = config.clip.width
        return [Slice(f"{m.group(1)}{p}_proj.{m.group(2)}", source_rows=slice(i * width, (i + 1) * width))
                for i, p in enumerate(("q", "k", "v"))]
    if _LANG.match(official):
        return [Slice("model.language." + official[len("model."):])]
    for pattern, repl in _SAM_RENAMES:
        if pattern.match(official):
            return [Slice(pattern.sub(repl, official, count=1))]
    return [Slice(official)]


def official_state_dict_keys(model: DeepseekOCRForCausalLM) -> dict[str, tuple[int, ...]]:
    """Official tensor name -> shape implied by ``model`` (works on meta): the inverse of the mapping."""
    out: dict[str, tuple[int, ...]] = {}
    for key, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        if key.startswith("model.language."):
            official = "model." + key[len("model.language."):]
            m = re.match(r"^(model\.layers\.\d+\.mlp\.experts\.)(gate_up_proj|down_proj)$", official)
            if m:
                n_exp = shape[0]
                for e in range(n_exp):
                    if m.group(2) == "down_proj":
                        out[f"{m.group(1)}{e}.down_proj.weight"] = shape[1:]
                    else:
                        half = (shape[1] // 2, shape[2])
                        out[f"{m.group(1)}{e}.gate_proj.weight"] = half
                        out[f"{m.group(1)}{e}.up_proj.weight"] = half
                continue
            out[official] = shape
            continue
        qkv = re.match(r"^(model\.vision_model\.transformer\.layers\.\d+\.self_attn\.)([qkv])_proj\.(weight|bias)$", key)
        if qkv:
            fused = f"{qkv.group(1)}qkv_proj.{qkv.group(3)}"
            out[fused] = (3 * shape[0], *shape[1:])
            continue
        out[_module_to_official_simple(key)] = shape
    return dict(sorted(out.items()))


_SAM_INVERSE = [
    (re.compile(r"^model\.sam_model\.layers\.(\d+)\.layer_norm([12])\."), r"model.sam_model.blocks.\1.norm\2."),
    (re.compile(r"^model\.sam_model\.layers\.(\d+)\."), r"model.sam_model.blocks.\1."),
    (re.compile(r"^model\.sam_model\.patch_embed\.projection\."), "model.sam_model.patch_embed.proj."),
    (re.compile(r"^model\.sam_model\.neck\.conv1\."), "model.sam_model.neck.0."),
    (re.compile(r"^model\.sam_model\.neck\.layer_norm1\."), "model.sam_model.neck.1."),
    (re.compile(r"^model\.sam_model\.neck\.conv2\."), "model.sam_model.neck.2."),
    (re.compile(r"^model\.sam_model\.neck\.layer_norm2\."), "model.sam_model.neck.3."),
    (re.compile(r"^model\.sam_model\.proj\.conv1\."), "model.sam_model.net_2."),
    (re.compile(r"^model\.sam_model\.proj\.conv2\."), "model.sam_model.net_3."),
]


def _module_to_official_simple(key: str) -> str:
    for pattern, repl in _SAM_INVERSE:
        if pattern.match(key):
            return pattern.sub(repl, key, count=1)
    return key


def export_official_state_dict(model: DeepseekOCRForCausalLM) -> dict[str, torch.Tensor]:
    """The model's weights under official names and shapes (contiguous CPU copies), e.g. to save."""
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for official in official_state_dict_keys(model):
        parts = [state[s.module_key][s.index] if s.index is not None else state[s.module_key]
                 for s in official_to_module(official, model.config)]
        out[official] = torch.cat(parts, dim=0).detach().cpu().contiguous() if len(parts) > 1 \
            else parts[0].detach().cpu().contiguous()
    return out


# ---- reading a folder ---------------------------------------------------------------------------------

def weight_files(model_dir: Path) -> dict[str, Path]:
    """Official tensor name -> safetensors file holding it (single file or sharded with an index)."""
    from safetensors import safe_open

    single, index = model_dir / SINGLE_FILE, model_dir / INDEX_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index with a 'weight_map' ({exc})") from exc
        files = {name: model_dir / fname for name, fname in weight_map.items()}
        missing_files = sorted({str(p) for p in files.values() if not p.exists()})
        if missing_files:
            raise CheckpointError(f"{index}: shard files missing: {', '.join(missing_files)}")
        return files
    if single.exists():
        try:
            with safe_open(str(single), framework="pt") as f:
                return {name: single for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{single}: not a readable safetensors file ({exc})") from exc
    raise CheckpointError(f"{model_dir}: no {SINGLE_FILE} or {INDEX_FILE} (no weights in the model folder)")


def _iter_tensors(files: dict[str, Path]) -> Iterator[tuple[str, Any]]:
    """(name, lazy slice handle) per tensor, one open file at a time."""
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        try:
            with safe_open(str(path), framework="pt") as f:
                for name in names:
                    yield name, f.get_slice(name)
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot read tensors ({exc})") from exc


@define(frozen=True)
class CheckpointCheck:
    """Differences between a checkpoint's tensors and the model's expected official tensors."""

    missing: list[str] = attrs.Factory(list)
    unexpected: list[str] = attrs.Factory(list)
    mis_shaped: list[str] = attrs.Factory(list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mis_shaped)

    def message(self, where: str) -> str:
        """One line naming every offending tensor."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {', '.join(self.unexpected)}")
        if self.mis_shaped:
            parts.append(f"{len(self.mis_shaped)} mis-shaped: {', '.join(self.mis_shaped)}")
        return f"{where}: checkpoint does not match the model, load refused ({'; '.join(parts)})"


def check_tensors(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> CheckpointCheck:
    """Compare official name -> shape maps."""
    return CheckpointCheck(
        missing=sorted(set(expected) - set(found)),
        unexpected=sorted(set(found) - set(expected)),
        mis_shaped=sorted(f"{k} {list(found[k])} != {list(expected[k])}"
                          for k in set(expected) & set(found) if tuple(found[k]) != tuple(expected[k])),
    )


def load_pretrained(model_dir: str | Path, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.bfloat16, attn_implementation: str = "eager",
                    experts_implementation: str = "grouped_mm") -> DeepseekOCRForCausalLM:
    """Official DeepSeek-OCR weights from a local folder (``config.json`` + safetensors).

    Every official tensor must map onto the model with its exact shape; otherwise a CheckpointError
    names each missing, unexpected and mis-shaped tensor and nothing is loaded.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir}: model folder not found")
    config = DeepseekOCRConfig.from_json_file(model_dir / "config.json")
    files = weight_files(model_dir)
    model = instantiate_on_meta(config, dtype, attn_implementation, experts_implementation)
    expected = official_state_dict_keys(model)
    found = {name: tuple(handle.get_shape()) for name, handle in _iter_tensors(files)}
    check = check_tensors(expected, found)
    if not check.ok:
        raise CheckpointError(check.message(str(model_dir)))
    model.to_empty(device=device)
    params = dict(model.named_parameters())
    covered: set[str] = set()
    with torch.no_grad():
        for name, handle in _iter_tensors(files):
            tensor = handle[:]
            for s in official_to_module(name, config):
                target = params[s.module_key]
                dest = target[s.index] if s.index is not None else target
                src = tensor[s.source_rows] if s.source_rows is not None else tensor
                dest.copy_(src.to(device=dest.device, dtype=dest.dtype))
                covered.add(s.module_key)
    uncovered = sorted(set(params) - covered)
    if uncovered:  # cannot happen when the key sets match; guards the mapping itself
        raise CheckpointError(f"{model_dir}: parameters not filled by the checkpoint: {', '.join(uncovered)}")
    reset_buffers(model)
    return model.eval()
