"""DeepSeek-OCR (v1) configuration: defaults from the published config.json.

The packaged ``config.json`` beside this file is a verbatim copy of the
published one (deepseek-ai/DeepSeek-OCR). Values that the published file does
not state (SAM/CLIP MLP widths, norm epsilons, rope theta, special token ids)
come from the official tensor list and the reference code, as cited per field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
from attrs import define, field

from llm_perf_opt.errors import UserError

PACKAGED_CONFIG = Path(__file__).with_name("config.json")


def _int_tuple(values: Iterable[int]) -> tuple[int, ...]:
    """Tuple of ints from any iterable (config lists arrive as JSON arrays)."""
    return tuple(int(v) for v in values)


class ConfigError(UserError):
    """A config file that is missing, unreadable or not DeepSeek-OCR."""


@define(kw_only=True, frozen=True)
class SamConfig:
    """SAM ViT-B image encoder (DeepEncoder stage 1)."""

    width: int = field(default=768, metadata={"help": "embedding width (channels)"})
    depth: int = field(default=12, metadata={"help": "number of transformer blocks"})
    heads: int = field(default=12, metadata={"help": "attention heads per block"})
    mlp_dim: int = field(default=3072, metadata={"help": "MLP hidden width (tensor list: lin1 3072x768)"})
    patch_size: int = field(default=16, metadata={"help": "patch size in pixels"})
    img_size: int = field(default=1024, metadata={"help": "pretraining image side; pos_embed is img_size/patch square"})
    window_size: int = field(default=14, metadata={"help": "window side of windowed-attention blocks (patches)"})
    global_attn_indexes: tuple[int, ...] = field(
        default=(2, 5, 8, 11), converter=_int_tuple, metadata={"help": "blocks with global attention"}
    )
    out_chans: int = field(default=256, metadata={"help": "neck output channels"})
    downsample_channels: tuple[int, ...] = field(
        default=(512, 1024), converter=_int_tuple, metadata={"help": "channels of net_2 and net_3 (stride-2 convs)"}
    )
    layer_norm_eps: float = field(default=1e-6, metadata={"help": "LayerNorm epsilon (reference code)"})


@define(kw_only=True, frozen=True)
class ClipConfig:
    """CLIP-L/14 encoder fed by SAM features (DeepEncoder stage 2)."""

    width: int = field(default=1024, metadata={"help": "hidden width"})
    layers: int = field(default=24, metadata={"help": "transformer layers"})
    heads: int = field(default=16, metadata={"help": "attention heads"})
    mlp_dim: int = field(default=4096, metadata={"help": "MLP hidden width (tensor list: fc1 4096x1024)"})
    image_size: int = field(default=224, metadata={"help": "pretraining image side"})
    patch_size: int = field(default=14, metadata={"help": "patch size; 224/14 = 16 -> 257 positions with CLS"})
    layer_norm_eps: float = field(default=1e-5, metadata={"help": "LayerNorm epsilon (CLIP default)"})

    @property
    def num_positions(self) -> int:
        """Learned position-embedding entries: (image_size/patch)^2 + 1 CLS."""
        return (self.image_size // self.patch_size) ** 2 + 1


@define(kw_only=True, frozen=True)
class ProjectorConfig:
    """Linear projector from fused vision features to the LM width."""

    input_dim: int = field(default=2048, metadata={"help": "CLIP width + SAM net_3 channels"})
    n_embed: int = field(default=1280, metadata={"help": "LM hidden width"})


@define(kw_only=True, frozen=True)
class LanguageConfig:
    """DeepSeek-3B-MoE text decoder (plain MHA, no MLA)."""

    hidden_size: int = field(default=1280, metadata={"help": "hidden width"})
    intermediate_size: int = field(default=6848, metadata={"help": "dense MLP width (first_k_dense_replace layers)"})
    moe_intermediate_size: int = field(default=896, metadata={"help": "per-expert MLP width"})
    num_hidden_layers: int = field(default=12, metadata={"help": "decoder layers"})
    num_attention_heads: int = field(default=10, metadata={"help": "query heads"})
    num_key_value_heads: int = field(default=10, metadata={"help": "KV heads"})
    n_routed_experts: int = field(default=64, metadata={"help": "routed experts per MoE layer"})
    n_shared_experts: int = field(default=2, metadata={"help": "shared experts (fused into one SwiGLU)"})
    num_experts_per_tok: int = field(default=6, metadata={"help": "top-k routed experts per token"})
    first_k_dense_replace: int = field(default=1, metadata={"help": "leading layers with a dense MLP"})
    vocab_size: int = field(default=129280, metadata={"help": "vocabulary size"})
    max_position_embeddings: int = field(default=8192, metadata={"help": "max sequence positions"})
    rope_theta: float = field(default=10000.0, metadata={"help": "RoPE base (reference DeepseekV2Config default)"})
    rms_norm_eps: float = field(default=1e-6, metadata={"help": "RMSNorm epsilon (DeepseekV2Config default)"})
    routed_scaling_factor: float = field(default=1.0, metadata={"help": "scale of routed expert output"})
    norm_topk_prob: bool = field(default=False, metadata={"help": "renormalise top-k weights (v1: no)"})
    bos_token_id: int = field(default=0, metadata={"help": "BOS id"})
    eos_token_id: int = field(default=1, metadata={"help": "EOS id"})
    pad_token_id: int = field(default=2, metadata={"help": "pad id (FACTS.md)"})
    image_token_id: int = field(default=128815, metadata={"help": "<image> id (FACTS.md)"})

    @property
    def head_dim(self) -> int:
        """Per-head width = hidden / heads (128 for v1)."""
        return self.hidden_size // self.num_attention_heads

    def is_moe_layer(self, index: int) -> bool:
        """True when decoder layer ``index`` has an MoE MLP."""
        return index >= self.first_k_dense_replace


@define(kw_only=True, frozen=True)
class DeepseekOCRConfig:
    """Whole-model config; ``name`` says where it came from ('default', 'tiny', or a path)."""

    name: str = field(default="default", metadata={"help": "origin: 'default', 'tiny' or the config.json path"})
    sam: SamConfig = field(factory=SamConfig, metadata={"help": "SAM encoder"})
    clip: ClipConfig = field(factory=ClipConfig, metadata={"help": "CLIP encoder"})
    projector: ProjectorConfig = field(factory=ProjectorConfig, metadata={"help": "projector"})
    language: LanguageConfig = field(factory=LanguageConfig, metadata={"help": "text decoder"})

    def __attrs_post_init__(self) -> None:
        expected = self.clip.width + self.sam.downsample_channels[-1]
        if self.projector.input_dim != expected:
            raise ConfigError(
                f"projector.input_dim {self.projector.input_dim} != clip.width + sam net_3 channels ({expected})"
            )
        if self.projector.n_embed != self.language.hidden_size:
            raise ConfigError("projector.n_embed must equal language.hidden_size")

    @classmethod
    def default(cls) -> DeepseekOCRConfig:
        """The published DeepSeek-OCR config (packaged copy of config.json)."""
        return cls.from_json_file(PACKAGED_CONFIG, name="default")

    @classmethod
    def tiny(cls) -> DeepseekOCRConfig:
        """Same structure, small widths: for CPU tests (a few layers, 8 experts).

        SAM keeps patch 16 and window 14 so the token grid per mode is the
        real one; CLIP width + SAM net_3 channels still feed the projector.
        """
        return cls(
            name="tiny",
            sam=SamConfig(width=32, depth=4, heads=2, mlp_dim=64, global_attn_indexes=(1, 3),
                          out_chans=16, downsample_channels=(32, 48)),
            clip=ClipConfig(width=48, layers=2, heads=4, mlp_dim=96),
            projector=ProjectorConfig(input_dim=96, n_embed=64),
            language=LanguageConfig(hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                                    num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                                    n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=2,
                                    vocab_size=129280, max_position_embeddings=8192),
        )

    @classmethod
    def named(cls, name: str) -> DeepseekOCRConfig:
        """'default' / 'tiny' or a path to a config.json or a model folder holding one."""
        if name == "default":
            return cls.default()
        if name == "tiny":
            return cls.tiny()
        path = Path(name)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise ConfigError(f"{name}: not 'default', 'tiny', a config.json or a folder with one")
        return cls.from_json_file(path)

    @classmethod
    def from_json_file(cls, path: Path, *, name: str | None = None) -> DeepseekOCRConfig:
        """Read a DeepSeek-OCR ``config.json``; ConfigError names the file and the problem."""
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: file not found") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not readable JSON ({exc})") from exc
        return cls.from_dict(raw, name=name or str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, name: str = "dict") -> DeepseekOCRConfig:
        """Build from the published config.json layout (language_config, vision_config, projector_config)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{name}: config must be a JSON object")
        model_type = raw.get("model_type")
        if model_type != "deepseek_vl_v2" or "vision_config" not in raw:
            raise ConfigError(
                f"{name}: model_type {model_type!r} is not DeepSeek-OCR (expected 'deepseek_vl_v2' "
                "with language_config, vision_config and projector_config)"
            )
        try:
            lang = raw.get("language_config", raw)
            if lang.get("use_mla"):
                raise ConfigError(f"{name}: use_mla=true (MLA attention) is not DeepSeek-OCR v1")
            widths = raw["vision_config"]["width"]
            sam_raw = widths["sam_vit_b"]
            clip_raw = widths["clip-l-14-224"]
            proj_raw = raw["projector_config"]
            if proj_raw.get("projector_type", "linear") != "linear":
                raise ConfigError(f"{name}: projector_type {proj_raw.get('projector_type')!r} is not 'linear'")
            # mlp_dim / out_chans / window_size are not in the published file (4x width, 256, 14 there);
            # files written by to_published_dict() carry them so that non-default configs round-trip.
            sam = SamConfig(
                width=int(sam_raw["width"]), depth=int(sam_raw["layers"]), heads=int(sam_raw["heads"]),
                mlp_dim=int(sam_raw.get("mlp_dim", 4 * int(sam_raw["width"]))),
                out_chans=int(sam_raw.get("out_chans", 256)),
                window_size=int(sam_raw.get("window_size", 14)),
                global_attn_indexes=tuple(sam_raw["global_attn_indexes"]),
                downsample_channels=tuple(sam_raw["downsample_channels"]),
            )
            clip = ClipConfig(
                width=int(clip_raw["width"]), layers=int(clip_raw["layers"]), heads=int(clip_raw["heads"]),
                mlp_dim=int(clip_raw.get("mlp_dim", 4 * int(clip_raw["width"]))),
                image_size=int(clip_raw["image_size"]),
                patch_size=int(clip_raw["patch_size"]),
            )
            projector = ProjectorConfig(input_dim=int(proj_raw["input_dim"]), n_embed=int(proj_raw["n_embed"]))
            language = LanguageConfig(
                hidden_size=int(lang["hidden_size"]), intermediate_size=int(lang["intermediate_size"]),
                moe_intermediate_size=int(lang["moe_intermediate_size"]),
                num_hidden_layers=int(lang["num_hidden_layers"]),
                num_attention_heads=int(lang["num_attention_heads"]),
                num_key_value_heads=int(lang["num_key_value_heads"]),
                n_routed_experts=int(lang["n_routed_experts"]), n_shared_experts=int(lang["n_shared_experts"]),
                num_experts_per_tok=int(lang["num_experts_per_tok"]),
                first_k_dense_replace=int(lang["first_k_dense_replace"]),
                vocab_size=int(lang["vocab_size"]),
                max_position_embeddings=int(lang["max_position_embeddings"]),
                bos_token_id=int(lang.get("bos_token_id", 0)), eos_token_id=int(lang.get("eos_token_id", 1)),
            )
        except KeyError as exc:
            raise ConfigError(f"{name}: missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{name}: bad value ({exc})") from exc
        return cls(name=name, sam=sam, clip=clip, projector=projector, language=language)

    def to_published_dict(self) -> dict[str, Any]:
        """This config in the published ``config.json`` layout (read back by :meth:`from_dict`).

        Adds ``mlp_dim`` / ``out_chans`` / ``window_size`` to the vision entries so that configs
        whose values differ from the published defaults (e.g. ``tiny``) survive a round trip.
        """
        lang = self.language
        language = {
            "bos_token_id": lang.bos_token_id, "eos_token_id": lang.eos_token_id,
            "first_k_dense_replace": lang.first_k_dense_replace, "hidden_size": lang.hidden_size,
            "intermediate_size": lang.intermediate_size,
            "max_position_embeddings": lang.max_position_embeddings,
            "moe_intermediate_size": lang.moe_intermediate_size, "n_routed_experts": lang.n_routed_experts,
            "n_shared_experts": lang.n_shared_experts, "num_attention_heads": lang.num_attention_heads,
            "num_experts_per_tok": lang.num_experts_per_tok, "num_hidden_layers": lang.num_hidden_layers,
            "num_key_value_heads": lang.num_key_value_heads, "topk_method": "greedy", "use_mla": False,
            "vocab_size": lang.vocab_size,
        }
        return {
            "model_type": "deepseek_vl_v2",
            "language_config": language,
            "projector_config": {"input_dim": self.projector.input_dim, "n_embed": self.projector.n_embed,
                                 "projector_type": "linear"},
            "vision_config": {"image_size": self.sam.img_size, "width": {
                "clip-l-14-224": {"heads": self.clip.heads, "image_size": self.clip.image_size,
                                  "layers": self.clip.layers, "patch_size": self.clip.patch_size,
                                  "width": self.clip.width, "mlp_dim": self.clip.mlp_dim},
                "sam_vit_b": {"downsample_channels": list(self.sam.downsample_channels),
                              "global_attn_indexes": list(self.sam.global_attn_indexes),
                              "heads": self.sam.heads, "layers": self.sam.depth, "width": self.sam.width,
                              "mlp_dim": self.sam.mlp_dim, "out_chans": self.sam.out_chans,
                              "window_size": self.sam.window_size},
            }},
            **language,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (for run snapshots)."""
        return attrs.asdict(self, value_serializer=lambda _inst, _field, v: list(v) if isinstance(v, tuple) else v)
