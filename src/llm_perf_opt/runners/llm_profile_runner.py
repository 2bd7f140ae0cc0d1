"""Stage 1 profiling of DeepSeek-OCR over a set of pages: stage timings, operators, MFU/MBU.

Runs the executable model (random weights by default, or a local checkpoint
with --model) over image folders, file lists, PDF pages or built-in
synthetic pages; times every stage with CUDA events (host clock on CPU)
under NVTX ranges; runs torch.profiler over a chosen number of pages; and
writes the run folder <output-dir>/<run_id>/torch_profiler/ with
report.md, operators.md, metrics.json, stakeholder_summary.md, inputs.yaml,
env.json, assumptions.md, the trace and plots. The run folder is printed
as the last line.

    llm-perf-opt profile --synthetic 10 --mode base --max-new-tokens 256 --repeats 2
    python -m llm_perf_opt.runners.llm_profile_runner --device cpu --config tiny --mode tiny --synthetic 2
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm_perf_opt.cli import CommandParser, run_guarded
from llm_perf_opt.data.validators import is_safe_id
from llm_perf_opt.errors import UserError
from llm_perf_opt.inputs import CATEGORIES, collect_pages
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modes import MODES, get_mode
from llm_perf_opt.models.deepseek_ocr.prompt import IMAGE_TAG, PROMPTS, resolve_prompt
from llm_perf_opt.profiling.mfu import Peaks
from llm_perf_opt.profiling.run import ProfileOptions, ProfileRunner
from llm_perf_opt.profiling.session import SessionSettings, resolve_device
from llm_perf_opt.vocab import DEFAULT_NO_REPEAT_NGRAM, DType, parse_dtype

#: Default parent folder of run folders.
DEFAULT_OUTPUT_DIR = Path("tmp/profile-output")
#: render resolution of --pdf pages when --dpi is not given (pixels per inch)
DEFAULT_PDF_DPI = 150


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of `llm-perf-opt profile`."""
    m = parser.add_argument_group("model")
    m.add_argument("--config", default="default",
                   help="model config: 'default' (published DeepSeek-OCR), 'tiny' (small, for CPU tests) or a "
                        "config.json path; ignored with --model")
    m.add_argument("--model", metavar="DIR", default=None,
                   help="local checkpoint folder (config.json + safetensors); default: random weights")
    m.add_argument("--dtype", default="bf16", help="compute dtype: bf16 (default), fp16 or fp32")
    m.add_argument("--attn-implementation", choices=("eager", "sdpa"), default="eager",
                   help="attention kernels of SAM, CLIP and the decoder (default eager, as the reference)")
    m.add_argument("--experts-implementation", choices=("grouped_mm", "batched_mm", "eager"), default="grouped_mm",
                   help="MoE expert kernel of transformers (default grouped_mm)")
    m.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda; an error if absent)")
    m.add_argument("--seed", type=int, default=0, help="seed of the random weights and synthetic pages")

    w = parser.add_argument_group("workload")
    w.add_argument("--mode", default="base", help=f"resolution mode: {', '.join(MODES)} (default base)")
    w.add_argument("--prompt", default="document",
                   help=f"prompt: a built-in name ({', '.join(PROMPTS)}) or text with one {IMAGE_TAG} tag "
                        "('\\n' is read as a newline); default 'document'")
    w.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate per page (default 64)")
    w.add_argument("--fixed-length", action=argparse.BooleanOptionalAction, default=True,
                   help="decode exactly --max-new-tokens, ignoring EOS, so runs compare (default on; "
                        "--no-fixed-length stops at EOS)")
    w.add_argument("--batch-size", type=int, default=1, help="pages per pass (default 1)")
    w.add_argument("--no-repeat-ngram-size", type=int, default=DEFAULT_NO_REPEAT_NGRAM,
                   help=f"ban repeated n-grams of this size while decoding (reference {DEFAULT_NO_REPEAT_NGRAM}; "
                        "0 = off)")

    i = parser.add_argument_group("inputs (combine freely; default --synthetic 3)")
    i.add_argument("--images", type=Path, metavar="DIR", help="folder of page images (png, jpg, tif, ...)")
    i.add_argument("--image-list", type=Path, metavar="FILE",
                   help="text file naming one image per line (relative to the file; '#' comments)")
    i.add_argument("--pdf", type=Path, metavar="FILE", help="PDF whose pages are rendered with pypdfium2")
    i.add_argument("--dpi", type=int, default=None, help="render resolution of --pdf pages (default 150)")
    i.add_argument("--synthetic", type=int, metavar="N", default=None,
                   help="N built-in synthetic document pages (A4/Letter, drawn locally)")
    i.add_argument("--synthetic-categories", nargs="+", metavar="CAT", default=None,
                   help=f"categories cycled by --synthetic: {' '.join(CATEGORIES)} (default all three)")
    i.add_argument("--synthetic-dpi", type=int, default=150, help="page resolution of synthetic pages (default 150)")
    i.add_argument("--limit", type=int, default=None, help="use only the first N pages")

    r = parser.add_argument_group("measurement")
    r.add_argument("--warmup", type=int, default=1, help="unmeasured warm-up passes before timing (default 1)")
    r.add_argument("--repeats", type=int, default=2, help="measured passes per page batch (default 2)")
    r.add_argument("--profile-images", type=int, default=2, metavar="K",
                   help="batches (spread over the set) in the torch.profiler pass; 0 skips it (default 2)")
    r.add_argument("--profile-max-new-tokens", type=int, default=None, metavar="N",
                   help="decode length in the profiler pass (default: --max-new-tokens; long decodes make "
                        "very large traces). With --profile-images 0 there is no profiler pass and it has no "
                        "effect; it is still accepted there because recorded run commands give both")
    r.add_argument("--top-k", type=int, default=20, help="operators listed in operators.md (default 20)")
    r.add_argument("--no-nvtx", action="store_true", help="do not push NVTX ranges (CUDA)")
    r.add_argument("--gpu", metavar="KEY", default=None,
                   help="GPU catalogue key whose peaks MFU/MBU use (default: the detected GPU; on CPU runs "
                        "only with this flag, as a what-if)")
    r.add_argument("--catalog", type=Path, metavar="FILE", default=None, help="extra GPU catalogue YAML")
    r.add_argument("--ceilings", type=Path, metavar="FILE", default=None,
                   help="measured ceilings JSON of `llm-perf-opt hw bench`: MFU/MBU also against them")

    o = parser.add_argument_group("output")
    o.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                   help=f"parent of the run folder (default {DEFAULT_OUTPUT_DIR}); artifacts go to "
                        "<output-dir>/<run_id>/torch_profiler/")
    o.add_argument("--run-id", default=None, help="run folder name (default: UTC time + mode)")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: only on a terminal)")


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise UserError(f"{name} {value}: must be >= {minimum}")


def check_args(args: argparse.Namespace) -> None:
    """Range checks with one-line messages."""
    _positive("--max-new-tokens", args.max_new_tokens)
    _positive("--batch-size", args.batch_size)
    _positive("--repeats", args.repeats)
    _positive("--warmup", args.warmup, 0)
    _positive("--profile-images", args.profile_images, 0)
    _positive("--top-k", args.top_k)
    _positive("--no-repeat-ngram-size", args.no_repeat_ngram_size, 0)
    if args.profile_max_new_tokens is not None:
        _positive("--profile-max-new-tokens", args.profile_max_new_tokens)
    if args.dpi is not None and args.pdf is None:
        raise UserError(f"--dpi {args.dpi} applies to --pdf pages: give --pdf FILE or drop it")
    if args.run_id is not None and not is_safe_id(args.run_id):
        raise UserError(f"--run-id {args.run_id!r}: a folder name of letters, digits and '._:+-' (no spaces or "
                        "path separators)")
    if args.model is not None and not Path(args.model).is_dir():
        raise UserError(f"--model {args.model}: not a folder")


def check_peak_files(args: argparse.Namespace, device_type: str, gpu_origin: str = "--gpu") -> None:
    """``args.gpu``, ``args.catalog`` and ``args.ceilings`` (any may be None) checked for a run on ``device_type``:
    the files exist and parse, the key is catalogued, the ceilings were measured on that GPU; one line each.
    ``gpu_origin`` names where the GPU key came from in the messages."""
    for flag, path in (("--catalog", args.catalog), ("--ceilings", args.ceilings)):
        if path is not None and not Path(path).is_file():
            raise UserError(f"{flag} {path}: file not found")
    if args.gpu is None and args.ceilings is None and args.catalog is None:
        return
    from llm_perf_opt.hardware.bench import load_ceilings
    from llm_perf_opt.hardware.catalog import load_catalog

    catalog = load_catalog(args.catalog)
    spec = catalog.get(args.gpu) if args.gpu is not None else None
    if args.ceilings is not None:
        ceilings = load_ceilings(args.ceilings)
        if spec is not None and ceilings.gpu_key != spec.key:
            raise UserError(f"--ceilings {args.ceilings} were measured on "
                            f"{ceilings.gpu_key or ceilings.device_name!r}, not on {gpu_origin} {spec.key!r}")
        if spec is None and device_type != "cuda":
            raise UserError(f"--ceilings on a {device_type} run needs --gpu KEY: the GPU whose measured peaks "
                            f"MFU/MBU are computed against ({ceilings.gpu_key or ceilings.device_name!r} "
                            "for this file)")


def check_model_source(args: argparse.Namespace, dtype: DType) -> None:
    """Dtype, config and checkpoint files checked before the run folder exists (one line each).

    Reads only config.json and the safetensors headers; the weights are loaded later by the session.
    """
    from llm_perf_opt.models.deepseek_ocr.checkpoint import weight_files
    from llm_perf_opt.profiling.session import TORCH_DTYPES

    if dtype not in TORCH_DTYPES:
        raise UserError(f"--dtype {dtype.value}: the executable model runs in "
                        f"{', '.join(d.value for d in TORCH_DTYPES)}")
    if args.model is not None:
        folder = Path(args.model)
        DeepseekOCRConfig.from_json_file(folder / "config.json")
        weight_files(folder)
    else:
        DeepseekOCRConfig.named(args.config)


def _origin(args: argparse.Namespace) -> str:
    parts = []
    if args.images:
        parts.append(f"folder {args.images}")
    if args.image_list:
        parts.append(f"list {args.image_list}")
    if args.pdf:
        parts.append(f"pdf {args.pdf} at {args.dpi if args.dpi is not None else DEFAULT_PDF_DPI} dpi")
    if args.synthetic:
        parts.append(f"synthetic x{args.synthetic} (seed {args.seed}, {args.synthetic_dpi} dpi)")
    return "; ".join(parts)


def _command(args: argparse.Namespace) -> str:
    """The command line as typed (``python -m`` runs are shown as ``llm-perf-opt profile``)."""
    argv = getattr(args, "_argv", None)
    if argv is not None:
        return "llm-perf-opt profile " + shlex.join(argv)
    return "llm-perf-opt " + shlex.join(sys.argv[1:])


def make_peaks_resolver(args: argparse.Namespace, dtype: DType) -> Any:
    """Peaks for MFU/MBU: --gpu, else the detected GPU's catalogue key; plus --ceilings."""

    def resolve(env: dict[str, Any]) -> tuple[Peaks | None, Peaks | None, list[str]]:
        from llm_perf_opt.hardware.bench import effective_peaks, load_ceilings
        from llm_perf_opt.hardware.catalog import load_catalog

        notes: list[str] = []
        catalog = load_catalog(args.catalog)
        gpu = env.get("gpu") or {}
        key = args.gpu or gpu.get("catalog_key")
        if key is None:
            if gpu:
                notes.append(f"MFU/MBU not computed: GPU {gpu.get('name')!r} is not in the catalogue "
                             f"({gpu.get('catalog_error')}); pass --gpu KEY")
            return None, None, notes
        spec = catalog.get(key)
        if not gpu:
            notes.append(f"MFU/MBU use the peaks of `{spec.key}` although this run was on CPU (--gpu what-if)")
        elif gpu.get("catalog_key") and gpu.get("catalog_key") != spec.key:
            notes.append(f"MFU/MBU use the peaks of `{spec.key}` (--gpu) while the device is "
                         f"`{gpu.get('catalog_key')}`")
        sheet = effective_peaks(spec)
        peaks = Peaks(gpu_key=spec.key, flops_per_s=sheet.peak_flops_per_s(dtype),
                      bytes_per_s=sheet.memory_bandwidth_bytes_per_s, origin="datasheet")
        measured = None
        if args.ceilings is not None:
            ceil = effective_peaks(spec, load_ceilings(args.ceilings))
            measured = Peaks(gpu_key=spec.key, flops_per_s=ceil.peak_flops_per_s(dtype),
                             bytes_per_s=ceil.memory_bandwidth_bytes_per_s, origin=ceil.source.value)
        return peaks, measured, notes

    return resolve


def _terminate_as_interrupt() -> Any:
    """Treat SIGTERM (e.g. `timeout`) like Ctrl-C so the artifacts of a cut-short run are written.

    Returns the previous handler (None when not in the main thread, where handlers cannot be set).
    """

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


def run(args: argparse.Namespace) -> int:
    """Run the profiling session; prints the run folder as the last line."""
    check_args(args)
    try:
        dtype = parse_dtype(args.dtype)
    except ValueError as exc:
        raise UserError(f"--dtype: {exc}") from None
    mode = get_mode(args.mode).name
    prompt = resolve_prompt(args.prompt)
    device = resolve_device(args.device)
    check_model_source(args, dtype)
    # a bad --gpu, --catalog or --ceilings is one line now, not a note after the measurements
    check_peak_files(args, device.type)
    synthetic = args.synthetic
    if synthetic is None and not (args.images or args.image_list or args.pdf):
        synthetic = 3
        args.synthetic = 3
    unreadable: list[tuple[str, str]] = []
    pages = collect_pages(images=args.images, image_list=args.image_list, pdf=args.pdf,
                          dpi=args.dpi if args.dpi is not None else DEFAULT_PDF_DPI,
                          synthetic=synthetic or 0, synthetic_categories=args.synthetic_categories,
                          synthetic_dpi=args.synthetic_dpi, seed=args.seed, limit=args.limit, skipped=unreadable)
    for _ref, reason in unreadable:
        print(f"warning: skipped {reason}", file=sys.stderr, flush=True)
    if args.batch_size > len(pages):
        raise UserError(f"--batch-size {args.batch_size}: more than the {len(pages)} page(s) of the set; give more "
                        "pages or a smaller batch")
    settings = SessionSettings(
        config_name=args.config, model_dir=str(args.model) if args.model else None, mode=mode, prompt=prompt,
        max_new_tokens=args.max_new_tokens, fixed_length=args.fixed_length, batch_size=args.batch_size,
        dtype=dtype, attn_implementation=args.attn_implementation,
        experts_implementation=args.experts_implementation, device=str(device), seed=args.seed,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
    )
    options = ProfileOptions(
        settings=settings, warmup=args.warmup, repeats=args.repeats, profile_images=args.profile_images,
        profile_max_new_tokens=args.profile_max_new_tokens, top_k=args.top_k, output_dir=args.output_dir,
        run_id=args.run_id, nvtx=not args.no_nvtx, progress=args.progress, gpu_key=args.gpu,
        catalog_file=args.catalog, ceilings_file=args.ceilings, input_origin=_origin(args),
        command=_command(args),
    )

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    from llm_perf_opt.reporting.profile_artifacts import write_artifacts

    try:  # the parent folder only; the run folder itself is created by the runner
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--output-dir {args.output_dir}: cannot create it ({exc.strerror or exc})") from exc
    from llm_perf_opt.profiling.analytic_work import session_work_fn_factory

    runner = ProfileRunner(options, pages, device=device, work_fn_factory=session_work_fn_factory(settings, pages),
                           peaks_resolver=make_peaks_resolver(args, dtype), log=log, input_skipped=unreadable)
    log(f"run folder: {runner.run_dir}")
    previous = _terminate_as_interrupt()
    try:
        outcome = runner.run(write_artifacts)
    except KeyboardInterrupt:
        print(runner.run_dir, flush=True)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    skipped = outcome.report.skipped_images
    if skipped:
        log(f"warning: {len(skipped)} skipped (unreadable pages or failed passes); see "
            f"{outcome.artifact_dir / 'report.md'}")
    print(outcome.run_dir, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llm_perf_opt.runners.llm_profile_runner``."""
    parser = CommandParser(prog="llm-perf-opt profile", description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv_list)
    args._argv = argv_list
    return run_guarded(lambda: run(args), "llm-perf-opt profile")


if __name__ == "__main__":
    sys.exit(main())
