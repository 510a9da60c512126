"""The tree stays as the project writes it: ruff's checks and formatting (pyproject.toml's [tool.ruff]) find nothing
to change, as .pre-commit-config.yaml's hooks check before each commit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing():
    result = ruff("check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_changes_nothing():
    result = ruff("format", "--check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_pre_commit_hooks_run_the_installed_ruff():
    """.pre-commit-config.yaml pins ruff's hooks to the ruff that the test extra installs, so the hooks and this
    module agree."""
    import yaml

    (repo,) = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    assert repo["repo"] == "https://github.com/astral-sh/ruff-pre-commit"
    assert [hook["id"] for hook in repo["hooks"]] == ["ruff-check", "ruff-format"]
    assert ruff("--version").stdout.split() == ["ruff", repo["rev"].removeprefix("v")]
