"""llm_perf_opt.measure_script: rotated rounds, what Ctrl-C keeps, and the --out check."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_perf_opt.errors import UserError
from llm_perf_opt.measure_script import Samples, ready_out, rotated_rounds, write_json_atomic


def test_each_round_starts_one_configuration_later() -> None:
    seen: list[str] = []
    samples: Samples = {"k": {"x": {"f": []}}}
    assert rotated_rounds(["a", "b", "c"], 4, seen.append, samples) == 4
    assert seen == list("abc" "bca" "cab" "abc")


def test_ctrl_c_keeps_the_full_rounds() -> None:
    samples: Samples = {"m": {"1": {"f": []}, "2": {"f": []}}}
    calls = {"n": 0}

    def one(c: str) -> None:
        calls["n"] += 1
        if calls["n"] == 6:  # in the third round, after its first configuration
            raise KeyboardInterrupt
        samples["m"][c]["f"].append(float(calls["n"]))

    assert rotated_rounds(["1", "2"], 5, one, samples) == 2
    assert samples == {"m": {"1": {"f": [1.0, 4.0]}, "2": {"f": [2.0, 3.0]}}}


def test_ctrl_c_in_the_first_round_is_one_line() -> None:
    def one(_c: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(UserError, match="before the first full round"):
        rotated_rounds(["a"], 3, one, {})


def test_ready_out(tmp_path: Path) -> None:
    out = ready_out(tmp_path / "a" / "b" / "x.json")
    assert out.parent.is_dir()
    with pytest.raises(UserError, match="--out FILE is required"):
        ready_out(None)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot create its folder"):
        ready_out(blocker / "x.json")


def test_after_round_runs_once_per_full_round() -> None:
    done: list[int] = []
    seen: list[str] = []
    assert rotated_rounds(["a", "b"], 3, seen.append, {}, after_round=done.append) == 3
    assert done == [1, 2, 3] and len(seen) == 6


def test_write_json_atomic_replaces_the_whole_file(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    write_json_atomic(out, {"a": 1})
    write_json_atomic(out, {"b": [2, 3]})
    assert out.read_text() == '{\n  "b": [\n    2,\n    3\n  ]\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left
