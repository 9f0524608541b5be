"""The README stays true: every config key documented, the quick start and CI agree."""

from __future__ import annotations

import re
from pathlib import Path

from store.config import iter_reference

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_config_key_is_documented() -> None:
    missing = [key for key, *_ in iter_reference() if f"`{key}`" not in README]
    assert missing == []


def test_quick_start_is_two_make_commands_and_ci_runs_the_same_tests() -> None:
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci and "make lint" in ci


def test_makefile_test_target_runs_pytest() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    target = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "pytest" in target
