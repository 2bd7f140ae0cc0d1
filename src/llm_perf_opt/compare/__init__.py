"""Predicted vs measured: join runs with the analytic model, calibrate it, plan with it.

- :mod:`.runs` — a Stage 1 run folder and the workload it ran
- :mod:`.analytic` — analytic reports as work cells, consistency checks
- :mod:`.analyzer_bridge` — rerun the analytic model (formulas only) for a run, a batch or a scenario
- :mod:`.compare` — per-stage and per-category comparison (`llm-perf-opt compare`)
- :mod:`.fit`, :mod:`.nnls`, :mod:`.calibrate` — fitting efficiencies (`llm-perf-opt calibrate`)
- :mod:`.whatif` — scenario sweeps on an exported report (`llm-perf-opt what-if`)
"""
