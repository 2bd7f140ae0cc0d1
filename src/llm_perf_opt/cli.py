"""`llm-perf-opt` console script: one subcommand per runner.

Each runner module exposes ``add_arguments(parser)`` and ``run(args) -> int``
and stays runnable as ``python -m llm_perf_opt.runners.<name>``; this front
door only dispatches. A :class:`~llm_perf_opt.errors.UserError` ends the
command with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from llm_perf_opt import __version__
from llm_perf_opt.errors import UserError

#: subcommand -> (runner module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "analyze": ("llm_perf_opt.runners.dsocr_analyzer_main", "analytic model report of DeepSeek-OCR (no GPU)"),
    "profile": ("llm_perf_opt.runners.llm_profile_runner", "Stage 1 profiling over an image set"),
    "model": ("llm_perf_opt.runners.model_cli", "executable model: parameter summary, image-token counts"),
    "hw": ("llm_perf_opt.runners.hw_cli", "GPU catalogue: list, show, detect, bench, gemms, gap, probe"),
    "compare": ("llm_perf_opt.runners.compare_cli", "predicted vs measured for a profiling run"),
    "calibrate": ("llm_perf_opt.runners.calibrate_cli", "fit per-category efficiencies from measured runs"),
    "what-if": ("llm_perf_opt.runners.what_if_cli", "recompute an analytic report under changed parameters"),
    "torchinfo": ("llm_perf_opt.runners.torchinfo_report", "torchinfo unique-layer tables of the model"),
    "rebuild": ("llm_perf_opt.runners.rebuild_cli", "rebuild a profiling run's reports from its files (no GPU)"),
}


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors (a bad flag value, a missing flag) are one line on stderr,
    ``<prog>: error: <message>``, and exit status 2, like a UserError; ``--help`` prints the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help lists the flags)\n")


def run_guarded(func: Callable[[], int], prog: str) -> int:
    """Run ``func``; turn a UserError into one stderr line and exit status 2."""
    try:
        return func()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def non_negative_int(text: str) -> int:
    """argparse ``type``: a whole number >= 0 (ArgumentTypeError, one line through CommandParser, else)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


class _NoBar:
    """Stand-in when tqdm is not installed: the work goes on without a bar."""

    def set_postfix_str(self, *_a: Any, **_k: Any) -> None:
        return None

    def update(self, *_a: Any) -> None:
        return None

    def close(self) -> None:
        return None


def progress_bar(total: int, enabled: bool | None, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr over ``total`` units (``enabled`` None: only on a terminal); a silent stand-in
    without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, disable=(None if enabled is None else not enabled),
                dynamic_ncols=True)


def render_saved(path: Path, render: Callable[[dict[str, Any]], str]) -> str:
    """``render`` of the JSON object a measuring script wrote to ``path`` (its ``--from FILE``); UserError in one
    line naming the file when it cannot be read or is not such a file (render raises KeyError, TypeError,
    AttributeError, ValueError or statistics.StatisticsError on a wrong one)."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return render(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, statistics.StatisticsError) as exc:
        raise UserError(f"--from {path}: not a file this script wrote ({type(exc).__name__}: {exc})") from None


def build_parser(load: Callable[[str], bool] = lambda name: True) -> argparse.ArgumentParser:
    """Top-level parser with every available subcommand; ``load(name)`` says which runners to import for their
    flags (default all). The others are listed by name and help only: importing the Stage 1 runner loads torch
    and transformers (seconds), which the arithmetic commands (analyze, compare, calibrate, what-if) do not
    need."""
    parser = CommandParser(prog="llm-perf-opt", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if not load(name):
            if importlib.util.find_spec(module_name) is not None:  # present in this tree: list it
                sub.add_parser(name, help=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # a runner that exists but fails to import is a bug: show it
            continue  # runner not installed in this tree: leave its subcommand out
        sp = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().splitlines()[0])
        module.add_arguments(sp)
        sp.set_defaults(_runner=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script. Only the named subcommand's runner is imported (the first argument
    that is not an option: the top level has no option that takes a value); an unknown name gets the full parser,
    whose error lists the subcommands."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen is None or chosen in SUBCOMMANDS:
        parser = build_parser(lambda name: name == chosen)
    else:
        parser = build_parser()
    args = parser.parse_args(argv)
    return run_guarded(lambda: int(args._runner(args)), "llm-perf-opt")


if __name__ == "__main__":
    sys.exit(main())
