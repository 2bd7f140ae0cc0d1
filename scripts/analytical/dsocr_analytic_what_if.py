#!/usr/bin/env python
"""What-if planning on an exported DeepSeek-OCR analytic report (same flags as `llm-perf-opt what-if`).

Example:
    python scripts/analytical/dsocr_analytic_what_if.py --report REPORT.json \
        --gpu h100-sxm a100-sxm4-80gb --batch-size 1 8 32 --max-new-tokens 256 1024
"""

from __future__ import annotations

import sys

from llm_perf_opt.runners.what_if_cli import main

if __name__ == "__main__":
    sys.exit(main())
