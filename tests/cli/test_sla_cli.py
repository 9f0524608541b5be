"""``deskq sla check`` and the queue's "Left" column on a demo with SLA targets."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import demo_workspace, run

SLA = """
[calendar]
timezone = "UTC"
hours = ["mon-sun 00:00-24:00"]

[[sla]]
first_response = "1h"
resolution = "30d"

[[sla]]
priority = "urgent"
first_response = "10m"
"""


def test_sla_check_lists_breaches_and_fails(tmp_path: Path) -> None:
    env, _ = demo_workspace(tmp_path, SLA)
    result = run(env, "sla", "check", "--json")
    assert result.returncode == 1, result.stderr  # demo tickets are hours old, unanswered
    flagged = json.loads(result.stdout)
    assert flagged and {f["state"] for f in flagged} <= {"breached", "at-risk"}
    first = flagged[0]
    assert set(first) == {"ticket", "queue", "subject", "target", "state", "left_seconds", "due"}
    assert first["left_seconds"] <= flagged[-1]["left_seconds"]  # most urgent first
    assert any(f["target"] == "first_response" and f["state"] == "breached" for f in flagged)
    text = run(env, "sla", "check")
    assert "breached" in text.stdout and "at risk or breached)" in text.stdout


def test_sla_check_without_targets_passes(tmp_path: Path) -> None:
    env, _ = demo_workspace(tmp_path, "")
    result = run(env, "sla", "check", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == []


def test_bad_sla_config_names_the_key(tmp_path: Path) -> None:
    env, _ = demo_workspace(tmp_path, '\n[[sla]]\npriority = "asap"\n')
    result = run(env, "sla", "check")
    assert result.returncode == 2 and "sla[0].priority" in result.stderr
    env, _ = demo_workspace(tmp_path / "b", '\n[[sla]]\nresolution = "soon"\n')
    result = run(env, "sla", "check")
    assert result.returncode == 2 and "sla[0].resolution" in result.stderr
    env, _ = demo_workspace(tmp_path / "c", '\n[calendar]\nhours = ["weekdays 9-5"]\n')
    result = run(env, "sla", "check")
    assert result.returncode == 2 and "calendar" in result.stderr and "mon-fri" in result.stderr
