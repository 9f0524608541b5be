"""``deskq reply``, ``deskq outbox`` and ``deskq templates`` as a script uses them."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from store.config import load_settings
from store.db import Database
from store.models import OutboxItem
from store.views import ticket_detail
from tests.cli.test_cli import demo_workspace, run


def db_of(root: Path) -> Database:
    return Database.open(load_settings(root / "config.toml").database.url)


def test_templates_list_show_check(tmp_path: Path) -> None:
    env, _ = demo_workspace(tmp_path)
    listed = run(env, "templates", "list").stdout
    for name in ("acknowledge", "need-info", "workaround", "resolved", "handed-over",
                 "duplicate", "wont-do"):  # fmt: skip
        assert name in listed
    assert "-> pending" in listed and "(shipped)" in listed
    assert 'requires = ["question"]' in run(env, "templates", "show", "need-info").stdout
    checked = run(env, "templates", "check")
    assert checked.returncode == 0 and checked.stdout.count("ok ") == 7


def test_a_broken_template_of_my_own_is_reported_with_its_line(tmp_path: Path) -> None:
    env, root = demo_workspace(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "resolved.txt").write_text(
        '+++\nname = "resolved"\n+++\nHello {{ requester.name }},\n\n{{ ticket.nope }}\n'
    )
    config = root / "config.toml"
    config.write_text(config.read_text() + f'\n[templates]\nfolders = ["{mine}"]\n')
    checked = run(env, "templates", "check")
    assert checked.returncode == 1
    assert "ERROR  template 'resolved'" in checked.stdout and "line 6" in checked.stdout
    assert "nope" in checked.stdout


def test_reply_dry_run_missing_variable_note_queue_and_send(tmp_path: Path) -> None:
    env, root = demo_workspace(tmp_path)
    missing = run(env, "reply", "3", "--template", "need-info", "--dry-run")
    assert missing.returncode == 1 and "requires question" in missing.stderr
    assert "--set NAME=VALUE" in missing.stderr
    dry = run(
        env, "reply", "3", "--template", "need-info", "--set", "question=Which one?", "--dry-run"
    )
    assert dry.returncode == 0 and "Which one?" in dry.stdout and "Subject: [" in dry.stdout
    note = run(env, "reply", "3", "--text", "internal only", "--note")
    assert note.returncode == 0
    attachment = tmp_path / "steps.txt"
    attachment.write_text("1. restart\n2. retry\n")
    queued = run(env, "reply", "3", "--template", "resolved", "--attach", str(attachment))
    assert queued.returncode == 0, queued.stderr
    items = json.loads(run(env, "outbox", "list", "--json").stdout)
    assert [(i["ticket"], i["state"], i["kind"]) for i in items] == [(3, "queued", "reply")]
    db = db_of(root)
    with db.session() as s:
        detail = ticket_detail(s, 3)
        raw = s.scalars(select(OutboxItem.raw)).one()
    db.close()
    assert detail is not None and detail.ticket.status == "resolved"
    ours = [m for m in detail.messages if m.direction == "outbound"][-1]
    assert [a.filename for a in ours.attachments] == ["steps.txt"]
    assert b'filename="steps.txt"' in raw
    assert not any(m.text == "internal only" and m.direction != "note" for m in detail.messages)
    sent = run(env, "poll", "--once")  # the demo's sender writes .eml files
    assert sent.returncode == 0, sent.stderr
    assert len(list((root / "outbox").glob("*.eml"))) == 1
    assert json.loads(run(env, "outbox", "list", "--json").stdout) == []


def test_retry_of_an_unknown_item_says_so(tmp_path: Path) -> None:
    env, _ = demo_workspace(tmp_path)
    result = run(env, "outbox", "retry", "999")
    assert result.returncode == 1 and "no outbox item 999" in result.stderr
