"""Stage 1 profiling: stage timers (NVTX + CUDA events), per-pass records, torch.profiler operator table,
aggregation and MFU/MBU. The runner is :mod:`llm_perf_opt.runners.llm_profile_runner`; the pieces:

- :mod:`.timers`     StageRecorder: NVTX ranges, CUDA-event (or host-clock) times per range
- :mod:`.session`    ModelSession: the executable model and one timed pass over a batch of pages
- :mod:`.records`    PassRecord, appended to passes.jsonl as each pass completes
- :mod:`.aggregate`  statistics over images x repeats, tokens/s, pages/s
- :mod:`.operators`  ProfileCapture and the operator table (self time, no double counting, categories)
- :mod:`.torch_prof` the torch.profiler pass (schedule, trace)
- :mod:`.mfu`, :mod:`.analytic_work`  MFU/MBU from the analytic model and catalogue peaks
- :mod:`.run`        ProfileRunner: the whole run, keeping everything measured on disk
"""
