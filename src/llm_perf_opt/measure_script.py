"""Plumbing shared by the measuring scripts under scripts/gpu/ (projector_pages.py, decode_rows.py,
memory_batches.py): their --config/--device/--out/--from flags, the --out check made before a measurement,
and rounds that rotate the configurations so that drift in the host's speed spreads over all of them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from llm_perf_opt.errors import UserError

T = TypeVar("T")

#: per configuration key, per sub-key (page count, batch size), per field: the samples of each full round
Samples = dict[str, dict[str, dict[str, list[float]]]]


def add_measure_args(ap: argparse.ArgumentParser, *, out_help: str, cpu_help: str, many_from: bool = False) -> None:
    """Add --config, --device (cuda | cpu), --out FILE and --from FILE to a measuring script's parser
    (``many_from``: --from takes one or more files, a list)."""
    ap.add_argument("--config", default="default", metavar="NAME",
                    help="model config (default: the official one; tiny: a small one for a CPU check)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help=f"cuda (default; bf16) or {cpu_help}")
    ap.add_argument("--out", type=Path, help=f"{out_help}; required to measure")
    if many_from:
        ap.add_argument("--from", dest="from_json", type=Path, metavar="FILE", nargs="+",
                        help="print the summary of each JSON this script wrote and what they give together "
                             "(recomputed from the files; no GPU)")
    else:
        ap.add_argument("--from", dest="from_json", type=Path, metavar="FILE",
                        help="print the summary of a JSON this script wrote (recomputed from the file; no GPU)")


def ready_out(out: Path | None) -> Path:
    """``--out``'s path once its folder exists; UserError (one line) when it is missing or its folder cannot be
    made, before any measurement is spent on it."""
    if out is None:
        raise UserError("--out FILE is required to measure (or --from FILE to summarize one)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create its folder ({exc.strerror})") from None
    return out


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` whole or not at all (a kill during the write leaves the old file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def rotated_rounds(configs: Sequence[T], rounds: int, one: Callable[[T], None], samples: Samples,
                   after_round: Callable[[int], None] | None = None) -> int:
    """Run ``one`` on every configuration once per round, each round starting one configuration later.

    Returns the rounds completed; ``after_round(done)`` runs after each (a save, so that an error or a kill
    later keeps them on disk). Ctrl-C keeps the full rounds: ``samples`` (``one``'s appends) is cut back to
    them; UserError when not one round was complete.
    """
    done = 0
    try:
        for r in range(rounds):
            k = r % len(configs)
            for c in [*configs[k:], *configs[:k]]:
                one(c)
            done = r + 1
            print(f"round {done}/{rounds}", file=sys.stderr, flush=True)
            if after_round is not None:
                after_round(done)
    except KeyboardInterrupt:
        if done == 0:
            raise UserError("interrupted before the first full round: nothing written") from None
        for by_key in samples.values():
            for rec in by_key.values():
                for field in rec:
                    del rec[field][done:]
        print(f"interrupted: writing the {done} full rounds taken", file=sys.stderr)
    return done
