"""A model session: the executable DeepSeek-OCR on one device, and one timed pass over a batch.

A pass is: load the page images (host), preprocess them for the mode
(host), build the prompt, ``prefill`` (which opens ``prefill`` and, inside
it, ``vision.sam``, ``vision.clip``, ``projector``), then the decode loop
inside one ``decode`` range whose steps open ``decode.step.{i}``. The
recorder given to :meth:`ModelSession.run_pass` times every range; host
times (load, preprocess, end to end) use ``time.perf_counter`` with the
device synchronised before reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from attrs import define, evolve, field
from PIL import Image

from llm_perf_opt.errors import UserError
from llm_perf_opt.inputs.pages import Page
from llm_perf_opt.models.deepseek_ocr import (
    DeepseekOCRConfig,
    DeepseekOCRForCausalLM,
    PreprocessedImage,
    build_model,
    build_prompt,
    decode_step,
    get_mode,
    load_pretrained,
    prefill,
    preprocess_image,
)
from llm_perf_opt.models.deepseek_ocr.modeling import tiny_decoder_program
from llm_perf_opt.profiling.records import PassRecord
from llm_perf_opt.profiling.timers import (
    ModuleHostProbe,
    StageRecorder,
    decode_step_times,
    host_probe_us,
    host_sync,
)
from llm_perf_opt.vocab import DEFAULT_NO_REPEAT_NGRAM, DType, Stage

#: torch dtypes of the compute dtypes a session can run in.
TORCH_DTYPES: dict[DType, torch.dtype] = {
    DType.BF16: torch.bfloat16, DType.FP16: torch.float16, DType.FP32: torch.float32,
}


@define(kw_only=True, frozen=True)
class SessionSettings:
    """What to run: model, mode, prompt, lengths, batch, dtype, device."""

    config_name: str = field(default="default", metadata={"help": "'default', 'tiny' or a config.json path"})
    model_dir: str | None = field(default=None, metadata={"help": "local checkpoint folder; None = random"})
    mode: str = field(default="base", metadata={"help": "resolution mode"})
    prompt: str = field(metadata={"help": "prompt text with one <image> tag"})
    max_new_tokens: int = field(default=64, metadata={"help": "decode steps cap (tokens per row)"})
    fixed_length: bool = field(default=True, metadata={"help": "ignore EOS: exactly max_new_tokens tokens"})
    batch_size: int = field(default=1, metadata={"help": "pages per pass"})
    dtype: DType = field(default=DType.BF16, metadata={"help": "compute dtype"})
    attn_implementation: str = field(default="eager", metadata={"help": "eager | sdpa"})
    experts_implementation: str = field(default="grouped_mm", metadata={"help": "grouped_mm | batched_mm | eager"})
    device: str = field(default="cuda", metadata={"help": "torch device string"})
    seed: int = field(default=0, metadata={"help": "seed of the random weights"})
    no_repeat_ngram_size: int = field(default=DEFAULT_NO_REPEAT_NGRAM,
                                      metadata={"help": "no-repeat n-gram ban (reference default 20; 0 = off)"})


ALLOCATOR_COUNTERS = ("num_device_alloc", "num_device_free", "num_alloc_retries")


def allocator_counts(device: torch.device) -> dict[str, int]:
    """The CUDA caching allocator's cumulative call counters (``ALLOCATOR_COUNTERS`` this torch reports);
    empty off CUDA. Host-side reads, no sync."""
    if device.type != "cuda":
        return {}
    stats = torch.cuda.memory_stats(device)
    return {k: int(stats[k]) for k in ALLOCATOR_COUNTERS if k in stats}


def resolve_device(name: str) -> torch.device:
    """'cuda', 'cuda:N' or 'cpu'; UserError when CUDA is asked for but absent."""
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device {name!r}: not a torch device ({exc})") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available here (torch {torch.__version__}, "
                            f"CUDA build {torch.version.cuda}); use --device cpu --config tiny")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise UserError(f"--device {name}: only cuda[:N] and cpu are supported")
    return dev


class ModelSession:
    """The model on its device plus the settings of every pass."""

    def __init__(self, settings: SessionSettings, device: torch.device) -> None:
        self.settings = settings
        self.device = device
        get_mode(settings.mode)  # ModeError (one line) before any weights are built
        if settings.dtype not in TORCH_DTYPES:
            raise UserError(f"--dtype {settings.dtype.value}: the executable model runs in "
                            f"{', '.join(d.value for d in TORCH_DTYPES)}")
        torch_dtype = TORCH_DTYPES[settings.dtype]
        self.model: DeepseekOCRForCausalLM
        if settings.model_dir:
            self.model = load_pretrained(Path(settings.model_dir), device=device, dtype=torch_dtype,
                                         attn_implementation=settings.attn_implementation,
                                         experts_implementation=settings.experts_implementation)
            self.tokenizer: object | None = settings.model_dir
        else:
            config = DeepseekOCRConfig.named(settings.config_name)
            self.model = build_model(config, device=device, dtype=torch_dtype, seed=settings.seed,
                                     attn_implementation=settings.attn_implementation,
                                     experts_implementation=settings.experts_implementation)
            self.tokenizer = None
        self.model.eval()
        self.config: DeepseekOCRConfig = self.model.config
        #: (page ids, images) of the last pass, reused by a pass over the same pages (:meth:`load`)
        self._loaded: tuple[tuple[tuple[str, str], ...], list[Image.Image]] | None = None
        #: host-speed probe on the decoder's own code path (a tiny two-layer decoder of this config)
        self.module_probe = ModuleHostProbe(
            tiny_decoder_program(self.config, device=device, dtype=torch_dtype,
                                 attn_implementation=settings.attn_implementation,
                                 experts_implementation=settings.experts_implementation, seed=settings.seed),
            device)
        if self.tokenizer is not None:
            from llm_perf_opt.models.deepseek_ocr import load_tokenizer

            self.tokenizer = load_tokenizer(str(self.tokenizer))

    @property
    def parameter_count(self) -> int:
        """Total parameters of the model."""
        return sum(p.numel() for p in self.model.parameters())

    def load(self, pages: Sequence[Page]) -> tuple[list[Image.Image], float, bool]:
        """(RGB images, load ms, reused): the images of ``pages``, kept from the pass before when that pass
        ran the same pages (warm-up, repeats and the profiler pass of a one-batch set), else loaded (drawn)
        now. Only the last batch is kept, and it is let go before the next batch is read: one batch of images
        is held at a time."""
        key = tuple((p.name, p.source) for p in pages)
        if self._loaded is not None and self._loaded[0] == key:
            return self._loaded[1], 0.0, True
        self._loaded = None  # the old batch's images go before the new ones are read
        t0 = time.perf_counter()
        images = [p.load() for p in pages]
        self._loaded = (key, images)
        return images, (time.perf_counter() - t0) * 1e3, False

    def preprocess(self, pages: Sequence[Page]) -> tuple[list[PreprocessedImage], float, float, bool]:
        """(preprocessed pages, load ms, preprocess ms, images reused): host-clock times; load ms is 0 when
        the images were those of the pass before (:meth:`load`)."""
        images, load_ms, reused = self.load(pages)
        t1 = time.perf_counter()
        pre = [preprocess_image(img, self.settings.mode) for img in images]
        return pre, load_ms, (time.perf_counter() - t1) * 1e3, reused

    def reconfigure(self, *, mode: str | None = None, batch_size: int | None = None,
                    max_new_tokens: int | None = None, no_repeat_ngram_size: int | None = None) -> None:
        """Change what the next passes run (the model stays as built); ModeError for an unknown mode."""
        s = self.settings
        if mode is not None:
            get_mode(mode)
        self.settings = evolve(
            s, mode=s.mode if mode is None else mode, batch_size=s.batch_size if batch_size is None else batch_size,
            max_new_tokens=s.max_new_tokens if max_new_tokens is None else max_new_tokens,
            no_repeat_ngram_size=s.no_repeat_ngram_size if no_repeat_ngram_size is None else no_repeat_ngram_size)

    def run_pass(self, pages: Sequence[Page], recorder: StageRecorder, *, max_new_tokens: int | None = None,
                 on_stage: Callable[[str], None] | None = None, probes: bool = True) -> PassRecord:
        """One timed pass over ``pages`` (one batch). Returns a record with indices left at 0.

        ``max_new_tokens`` overrides the settings' value (profiler pass).
        ``on_stage`` is told the stage about to run (progress display).
        ``probes``: take the host-speed probes before and after the pass (off in the profiler pass, whose
        operator table would otherwise count the probes' kernels outside the stages).
        """
        s = self.settings
        n_new = s.max_new_tokens if max_new_tokens is None else max_new_tokens
        notify = on_stage or (lambda _name: None)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        probe = host_probe_us(self.device) if probes else None
        module_probe = self.module_probe.probe() if probes else None
        notify("preprocess")
        host_sync(self.device)
        alloc_before = allocator_counts(self.device)  # host-side counters: the probes' allocations stay out
        t_start = time.perf_counter()
        images, load_ms, pre_ms, reused = self.preprocess(pages)
        batch = build_prompt([im.layout for im in images], s.prompt, tokenizer=self.tokenizer)
        limit = self.config.language.max_position_embeddings
        if batch.input_ids.shape[1] + n_new > limit:
            raise UserError(f"prompt ({batch.input_ids.shape[1]} tokens) + max_new_tokens ({n_new}) exceeds "
                            f"{limit} positions")
        notify(Stage.PREFILL.value)
        state = prefill(self.model, batch, images, scope=recorder.scope)
        notify(Stage.DECODE.value)
        alloc_decode = allocator_counts(self.device)
        with recorder.scope(Stage.DECODE.value):
            for i in range(n_new):
                state = decode_step(self.model, state, scope=recorder.scope,
                                    no_repeat_ngram_size=s.no_repeat_ngram_size, fixed_length=s.fixed_length,
                                    forward=i < n_new - 1)
                if not s.fixed_length and bool(state.finished.all()):
                    break
        alloc_after = allocator_counts(self.device)
        host_sync(self.device)
        t_end = time.perf_counter()
        # the same probes again, outside the timed pass: with those before it they bracket the host's speed
        probe_after = host_probe_us(self.device) if probes else None
        module_probe_after = self.module_probe.probe() if probes else None
        ranges = recorder.collect()
        stage_ms = {k: v for k, v in ranges.items() if k in {st.value for st in Stage}}
        steps = decode_step_times(ranges)
        # every step but the last runs the decoder (the last only picks a token); an EOS stop likewise
        forwards = max(0, state.step - 1)
        peak = int(torch.cuda.max_memory_allocated(self.device)) if self.device.type == "cuda" else None
        reserved = int(torch.cuda.max_memory_reserved(self.device)) if self.device.type == "cuda" else None
        alloc = {k: v - alloc_before[k] for k, v in alloc_after.items() if k in alloc_before}
        decode_allocs = alloc_after.get("num_device_alloc", 0) - alloc_decode.get("num_device_alloc", 0)
        return PassRecord(
            pass_index=0, batch_index=0, repeat_index=0, image_indices=[], image_names=[p.name for p in pages],
            load_ms=load_ms, pages_reused=reused, preprocess_ms=pre_ms, stage_ms=stage_ms, decode_step_ms=steps,
            e2e_ms=(t_end - t_start) * 1e3 - load_ms, prompt_tokens=int(sum(batch.lengths)),
            padded_prompt_length=int(batch.input_ids.shape[1]),
            image_tokens=int(sum(im.layout.nominal_tokens for im in images)),
            image_slots=int(sum(im.layout.prompt_slots for im in images)),
            num_tiles=[int(im.layout.num_tiles) for im in images],
            generated_tokens=int(state.num_new_tokens.sum()), decode_steps=int(state.step),
            decode_forwards=forwards, peak_memory_bytes=peak, host_probe_us=probe,
            host_module_probe_us=module_probe, host_probe_after_us=probe_after,
            host_module_probe_after_us=module_probe_after, device_allocs=alloc.get("num_device_alloc"),
            device_frees=alloc.get("num_device_free"), alloc_retries=alloc.get("num_alloc_retries"),
            decode_device_allocs=decode_allocs if "num_device_alloc" in alloc else None,
            peak_reserved_bytes=reserved,
        )
