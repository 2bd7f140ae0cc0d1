"""Executable model facts: parameter counts per top module, image-token counts per page and mode.

    llm-perf-opt model summary [--model PATH | --config tiny|default|PATH] [--json]
    llm-perf-opt model tokens --mode MODE (--image PATH | --image-size WxH) [--prompt TEXT] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from llm_perf_opt.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-actions 'summary' and 'tokens'."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("summary", help="parameter counts per top module (built on the meta device)",
                       description="Parameter counts per top module of the model, built on the meta device "
                                   "(no weights are allocated or read).")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="PATH", help="local model folder; its config.json defines the model")
    src.add_argument("--config", default="default", metavar="NAME",
                     help="'default' (published config), 'tiny' (test config) or a config.json path")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    t = sub.add_parser("tokens", help="tile grid, prompt slot count and valid tokens of one page",
                       description="Tile grid, prompt slot count and valid image tokens of one page in a "
                                   "resolution mode.")
    t.add_argument("--mode", required=True, help="resolution mode: tiny, small, base, large or gundam")
    img = t.add_mutually_exclusive_group(required=True)
    img.add_argument("--image", metavar="PATH", help="page image file (its size is used)")
    img.add_argument("--image-size", metavar="WxH", help="page size in pixels, e.g. 1700x2200")
    t.add_argument("--prompt", default="document",
                   help="a built-in prompt name (document, free_ocr, ocr_image) or text with one <image> tag "
                        "('\\n' is read as a newline); default 'document'")
    t.add_argument("--json", action="store_true", help="print JSON instead of text")


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H); UserError on anything else."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise UserError(f"--image-size {text!r}: expected WxH in pixels, e.g. 1700x2200")
    return int(m.group(1)), int(m.group(2))


def summary(args: argparse.Namespace) -> dict[str, Any]:
    """Parameter counts of the model built on meta."""
    from llm_perf_opt.models.deepseek_ocr import DeepseekOCRConfig, build_model, parameter_summary

    config = DeepseekOCRConfig.named(args.model or args.config)
    counts = parameter_summary(build_model(config, device="meta"))
    return {"config": config.name, "parameters": counts}


def tokens(args: argparse.Namespace) -> dict[str, Any]:
    """Token layout of one page."""
    from llm_perf_opt.models.deepseek_ocr import get_mode, synthetic_text_tokens, token_layout
    from llm_perf_opt.models.deepseek_ocr.preprocess import load_image, page_valid_tokens
    from llm_perf_opt.models.deepseek_ocr.prompt import resolve_prompt

    mode = get_mode(args.mode)
    prompt = resolve_prompt(args.prompt)
    if args.image:
        width, height = load_image(args.image)[0].size
    else:
        width, height = parse_size(args.image_size)
    layout = token_layout(mode, width, height)
    text = synthetic_text_tokens(prompt)
    return {
        "mode": mode.name, "width": width, "height": height,
        "tile_grid": {"rows": layout.rows, "cols": layout.cols, "tiles": layout.num_tiles},
        "global_grid_side": layout.global_side, "tile_grid_side": layout.tile_side,
        "nominal_tokens": layout.nominal_tokens, "prompt_slots": layout.prompt_slots,
        "valid_tokens": page_valid_tokens(layout, width, height, mode),
        "prompt_tokens": 1 + text + layout.prompt_slots, "text_tokens": text, "tokenizer_kind": "synthetic",
    }


def format_summary(result: dict[str, Any]) -> str:
    counts = result["parameters"]
    width = max(len(k) for k in counts)
    lines = [f"DeepSeek-OCR parameters (config: {result['config']})", f"{'module':<{width}}  {'params':>15}"]
    lines += [f"{k:<{width}}  {v:>15,}" for k, v in counts.items()]
    return "\n".join(lines)


def format_tokens(r: dict[str, Any]) -> str:
    g = r["tile_grid"]
    return "\n".join([
        f"mode {r['mode']}, page {r['width']}x{r['height']} px",
        f"tile grid: {g['rows']} rows x {g['cols']} cols ({g['tiles']} tiles)"
        + (", no tiling" if not g["tiles"] else ""),
        f"global grid side: {r['global_grid_side']}, tile grid side: {r['tile_grid_side']}",
        f"nominal vision tokens: {r['nominal_tokens']}",
        f"prompt <image> slots (with newlines and separator): {r['prompt_slots']}",
        f"valid tokens (not padding): {r['valid_tokens']}",
        f"prompt tokens: {r['prompt_tokens']} (BOS + {r['text_tokens']} text tokens, {r['tokenizer_kind']}) ",
    ]).rstrip()


def run(args: argparse.Namespace) -> int:
    """Dispatch the sub-action; print a table or JSON."""
    if args.action == "summary":
        result = summary(args)
        print(json.dumps(result, indent=2) if args.json else format_summary(result))
    else:
        result = tokens(args)
        print(json.dumps(result, indent=2) if args.json else format_tokens(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llm_perf_opt.runners.model_cli``."""
    from llm_perf_opt.cli import CommandParser, run_guarded

    parser = CommandParser(prog="llm-perf-opt model", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: run(args), "llm-perf-opt model")


if __name__ == "__main__":
    sys.exit(main())
