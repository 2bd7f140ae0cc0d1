"""env.git_revision: the commit of a checkout, whether it has local changes, optionally under one path only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from llm_perf_opt.profiling.env import GIT_REVISION_ENV, git_revision


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


def test_dirty_is_scoped_to_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "reports").mkdir()
    (repo / "src" / "code.py").write_text("x = 1\n")
    (repo / "reports" / "r.md").write_text("before\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_revision(repo / "src") == (head, False)
    (repo / "reports" / "r.md").write_text("after\n")  # a rewritten report, not code
    assert git_revision(repo / "src") == (head, True)
    assert git_revision(repo / "src", scope=repo / "src") == (head, False)
    (repo / "src" / "code.py").write_text("x = 2\n")
    assert git_revision(repo / "src", scope=repo / "src") == (head, True)
    # outside a checkout: the environment's revision, or nothing
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.delenv(GIT_REVISION_ENV, raising=False)
    assert git_revision(outside) == (None, None)
    monkeypatch.setenv(GIT_REVISION_ENV, "abc123")
    assert git_revision(outside) == ("abc123", None)
