"""``deskq providers`` and ``deskq audit`` on the demo (SQLite): access per queue from the
command line, and what ``list``, ``show`` and ``report`` then show the config's ``me``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import assert_user_error, demo_workspace, run


def queues_listed(env: dict[str, str]) -> set[str]:
    result = run(env, "list", "--json")
    assert result.returncode == 0, result.stderr
    return {t["queue"] for t in json.loads(result.stdout)}


def test_members_narrow_what_a_provider_sees_and_views_are_audited(tmp_path: Path) -> None:
    env, _ = demo_workspace(tmp_path)  # me = alex.provider@corp.example
    assert "every queue is open" in run(env, "providers").stdout
    assert queues_listed(env) == {"it", "hr", "facilities"}
    hr = next(t for t in json.loads(run(env, "list", "--json", "--queue", "hr").stdout))

    added = run(env, "providers", "add", "dana@corp.example", "--queue", "hr", "--name", "Dana")
    assert added.returncode == 0 and "role dana" in added.stdout, added.stderr
    assert queues_listed(env) == {"it", "facilities"}  # hr is Dana's now
    assert_user_error(run(env, "show", str(hr["id"])), 1, f"no ticket #{hr['id']} in your queues")
    assert_user_error(run(env, "report", "--queue", "hr"), 2, "no queue 'hr'")
    report = json.loads(run(env, "report", "--since", "all", "--format", "json").stdout)
    assert {g["key"] for g in report["groups"]} == {"it", "facilities"}

    run(env, "providers", "add", "alex.provider@corp.example", "--queue", "hr")
    assert queues_listed(env) == {"it", "hr", "facilities"}
    listed = json.loads(run(env, "providers", "--json").stdout)
    assert {p["address"]: [q["queue"] for q in p["queues"]] for p in listed} == {
        "alex.provider@corp.example": ["hr"],
        "dana@corp.example": ["hr"],
    }
    for _ in range(2):  # twice within ten minutes: one view in the audit
        assert run(env, "show", str(hr["id"])).returncode == 0
    audit = json.loads(run(env, "audit", "--ticket", str(hr["id"]), "--json").stdout)
    views = [a for a in audit if a["kind"] == "viewed"]
    assert [v["actor"] for v in views] == ["alex.provider@corp.example"]
    assert audit[-1]["kind"] == "created"  # newest first, down to the ticket's creation
    assert "viewed" not in run(env, "show", str(hr["id"]), "--json").stdout

    removed = run(env, "providers", "remove", "dana@corp.example")
    assert removed.returncode == 0 and "removed from 1 queue" in removed.stdout
    assert_user_error(
        run(env, "providers", "remove", "alex.provider@corp.example"), 2, "last provider of hr"
    )  # hr would open to everyone: not by mistake
    assert run(env, "providers", "remove", "alex.provider@corp.example", "--reopen").returncode == 0
    assert_user_error(run(env, "providers", "add", "x@corp.example", "--queue", "nope"), 2,
                      "no queue nope")  # fmt: skip
    assert_user_error(run(env, "providers", "roles"), 2, "PostgreSQL")
