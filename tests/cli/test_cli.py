"""End to end: the installed ``deskq`` script, run as a user would, on throwaway files.

Every run gets its own HOME, XDG dirs and ``DESKQ_CONFIG`` under a temporary
directory, so nothing reads or writes the real home. Tickets are seeded through the
store API in this process, then read back through the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from store.config import load_settings
from store.db import Database
from store.migrate import SCHEMA_HEAD
from store.models import (
    Attachment,
    Blob,
    Direction,
    Message,
    Queue,
    Status,
    TicketFlag,
    TicketTag,
)
from store.services import (
    add_note,
    claim,
    get_or_create_person,
    open_ticket,
    set_status,
    set_tags,
)
from store.workspace import open_workspace

DESKQ = Path(sys.executable).parent / "deskq"
HOSTILE_SUBJECT = "\x1b]0;pwned\x07[bold red]URGENT[/] \u202eevil"
HOSTILE_BODY = "\x1b[31mred alert\x1b[0m in the \x9b2J body \u202efdp.exe"
STATUSES = "new, open, pending, on-hold, resolved, closed"

pytestmark = pytest.mark.skipif(not DESKQ.exists(), reason=f"no deskq script at {DESKQ}")


def make_env(home: Path, config: Path, **extra: str) -> dict[str, str]:
    """A clean environment: private HOME and XDG dirs, this config, UTF-8 output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESKQ_", "XDG_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        DESKQ_CONFIG=str(config),
        COLUMNS="120",
        PYTHONIOENCODING="utf-8",
    )
    env.update(extra)
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DESKQ), *args],
        env=env,
        cwd=env["HOME"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def demo_workspace(tmp_path: Path, extra: str = "") -> tuple[dict[str, str], Path]:
    """``deskq demo --dir`` in ``tmp_path`` (no terminal: it prints the queue), plus
    ``extra`` config text; returns the environment and the workspace folder."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    root = tmp_path / "demo"
    env = make_env(tmp_path, root / "config.toml")
    result = run(env, "demo", "--dir", str(root))
    assert result.returncode == 0, result.stderr
    assert "demo mailbox: 200 emails ingested" in result.stderr
    assert "(the terminal UI)" in result.stdout
    if extra:
        config = root / "config.toml"
        config.write_text(config.read_text() + extra)
    return env, root


def run_python(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=env["HOME"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """A one-paragraph ``deskq: ...`` message on stderr, no traceback, the given exit code."""
    err = result.stderr
    assert result.returncode == code, (result.returncode, result.stdout, err)
    assert "Traceback" not in err, err
    assert err.startswith("deskq: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def assert_safe_for_terminal(text: str) -> None:
    assert "\x1b" not in text and "\x9b" not in text and "\u202e" not in text, repr(text)
    assert "\x07" not in text, repr(text)


# --------------------------------------------------------------------------- init


@dataclass
class Installed:
    home: Path
    config: Path
    data: Path
    env: dict[str, str]
    init: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """``deskq init --data-dir D`` in a fresh home."""
    home = tmp_path_factory.mktemp("init")
    config = home / "etc" / "deskq.toml"
    data = home / "data"
    env = make_env(home, config)
    return Installed(home, config, data, env, run(env, "init", "--data-dir", str(data)))


def test_init_writes_config_and_database(installed: Installed) -> None:
    result = installed.init
    assert result.returncode == 0, result.stderr
    db_file = installed.data / "deskq.db"
    assert result.stdout.splitlines() == [
        f"config: wrote {installed.config}",
        f"database: sqlite:///{db_file} is ready",
        "next: edit the config, then 'deskq config check' and 'deskq list'",
    ]
    settings = load_settings(installed.config)
    assert settings.database.url == f"sqlite:///{db_file}"
    assert "@" in settings.me
    assert [q.key for q in settings.queue] == ["help"]
    for sub in ("cur", "new", "tmp"):
        assert (installed.data / "Maildir" / sub).is_dir()
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (SCHEMA_HEAD,)
        ]
        assert conn.execute("SELECT key FROM queues").fetchall() == [("help",)]
    assert not (installed.home / ".config").exists()  # nothing at the default location


def test_init_again_leaves_the_config_alone(installed: Installed) -> None:
    edited = installed.config.read_text(encoding="utf-8") + "# my own edit\n"
    installed.config.write_text(edited, encoding="utf-8")
    result = run(installed.env, "init", "--data-dir", str(installed.home / "elsewhere"))
    assert result.returncode == 0, result.stderr
    assert f"config: {installed.config} exists, left as it is" in result.stdout
    assert "is ready" in result.stdout
    assert installed.config.read_text(encoding="utf-8") == edited
    assert not (installed.home / "elsewhere").exists()


def test_init_with_a_user_name_that_is_no_address(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    env = make_env(tmp_path, config, LOGNAME="John Smith", USER="John Smith")
    result = run(env, "init", "--data-dir", str(tmp_path / "data"))
    assert "Traceback" not in result.stderr
    if result.returncode == 0:
        load_settings(config)
    else:
        assert not config.exists(), "init left behind a config that does not load"


def test_init_with_a_bad_me_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    env = make_env(tmp_path, config)
    result = run(env, "init", "--me", "Alice <alice@corp.example>", "--data-dir", str(tmp_path))
    assert_user_error(result, 2, "me")
    assert not config.exists(), "init left behind a config that does not load"


def test_list_json_on_an_empty_database(installed: Installed) -> None:
    result = run(installed.env, "list", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_list_on_an_empty_database(installed: Installed) -> None:
    result = run(installed.env, "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = "ID QUEUE STATUS PRIO AGE REQUESTER ASSIGNEE SUBJECT"
    assert lines[0].split() == header.split()
    assert lines[1:] == ["(0 tickets)"]


def test_db_upgrade_when_current(installed: Installed) -> None:
    result = run(installed.env, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    db_file = installed.data / "deskq.db"
    assert result.stdout == f"database sqlite:///{db_file}: already at schema {SCHEMA_HEAD}\n"


def test_db_upgrade_of_an_older_database_says_each_step(tmp_path: Path) -> None:
    from alembic import command

    from store import migrate
    from store.db import Database

    config = tmp_path / "deskq.toml"
    env = make_env(tmp_path, config)
    assert run(env, "init", "--data-dir", str(tmp_path / "data")).returncode == 0
    db = Database.open(f"sqlite:///{tmp_path / 'data' / 'deskq.db'}")
    with db.engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "-1")
    db.close()
    result = run(env, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("deskq: migrating the database sqlite:///")
    before = f"{int(SCHEMA_HEAD) - 1:04d}"
    assert f"from schema {before} to {SCHEMA_HEAD} (1 step); on a large database" in lines[0]
    assert (
        lines[1].startswith("deskq: schema 0014 (the body of a long message")
        and "[1/1]" in lines[1]
    )
    assert lines[2].startswith(f"deskq: database migrated to schema {SCHEMA_HEAD} in ")
    assert result.stdout.endswith(f": migrated to schema {SCHEMA_HEAD}\n")


# --------------------------------------------------------------------------- config check

CHECK_CONFIG = """\
me = "alice@corp.example"

[database]
url = "postgresql+psycopg://u:hunter2@127.0.0.1:1/x"
password_env = "DESKQ_TEST_UNSET_PASSWORD"

[[mailbox]]
name = "helpdesk"
host = "imap.corp.example"
username = "helpdesk@corp.example"
password_env = "DESKQ_TEST_SET_PASSWORD"

[[queue]]
key = "it"
name = "IT Help"
tag = "IT"
address = "it-help@corp.example"

[sending]
host = "smtp.corp.example"
password_command = "pass show smtp"
"""


def test_config_check_masks_secrets_and_never_connects(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CHECK_CONFIG, encoding="utf-8")
    env = make_env(tmp_path, config, DESKQ_TEST_SET_PASSWORD="sekrit-value")
    result = run(env, "config", "check")
    assert result.returncode == 0, result.stderr  # port 1 would refuse a connection
    out = result.stdout
    assert out.startswith(f"# {config}: valid\n")
    assert 'url = "postgresql+psycopg://u:***@127.0.0.1:1/x"' in out
    assert "hunter2" not in out + result.stderr
    assert "sekrit-value" not in out + result.stderr
    assert 'password_env = "DESKQ_TEST_UNSET_PASSWORD"  # NOT SET' in out
    assert 'password_env = "DESKQ_TEST_SET_PASSWORD"  # set\n' in out
    assert 'password_command = "pass show smtp"  # run when needed' in out
    # defaults are shown too
    assert 'security = "tls"' in out and "busy_timeout_ms = 10000" in out
    assert "\n[[mailbox]]\n" in out and "\n[[queue]]\n" in out and "\n[sending]\n" in out


# --------------------------------------------------------------------------- seeded queue


@dataclass
class Seeded:
    home: Path
    config: Path
    db_file: Path
    env: dict[str, str]
    ids: dict[str, int]
    cache: dict[tuple[str, ...], subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run deskq once per distinct command line (the seeded data never changes)."""
        if args not in self.cache:
            self.cache[args] = run(self.env, *args)
        return self.cache[args]

    def json(self, *args: str) -> Any:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


SEEDED_CONFIG = """\
me = "alice@corp.example"

[database]
url = "sqlite:///{db}"

[[queue]]
key = "it"
name = "IT Help"
tag = "IT"
address = "it-help@corp.example"
aliases = ["it@corp.example"]

[[queue]]
key = "hr"
name = "People"
tag = "HR"
address = "hr@corp.example"
"""

PHOTO = b"\xff\xd8\xff\xe0 not really a jpeg " * 10


def _inbound(ticket_id: int, **kw: Any) -> Message:
    values: dict[str, Any] = {
        "ticket_id": ticket_id,
        "direction": Direction.INBOUND,
        "threaded_by": "new",
        "date": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
    }
    values.update(kw)
    return Message(**values)


def seed(config: Path) -> dict[str, int]:
    ws = open_workspace(load_settings(config))
    try:
        with ws.db.write() as s:
            it = s.scalars(select(Queue).where(Queue.key == "it")).one()
            hr = s.scalars(select(Queue).where(Queue.key == "hr")).one()
            alice = get_or_create_person(s, "alice@corp.example", "Alice Agent", provider=True)
            bob = get_or_create_person(s, "Bob@Corp.Example", "Bob Requester")
            carol = get_or_create_person(s, "carol@corp.example", "Carol")
            mallory = get_or_create_person(s, "mallory@evil.example", "Mal\u202eyrol\x1b[8m")

            # 1: claimed, noted, tagged, flagged, with an attachment
            t1 = open_ticket(s, queue=it, requester=bob, subject="Printer on fire")
            m1 = _inbound(
                t1.id,
                message_id="<m1@corp.example>",
                author_id=bob.id,
                from_addr="Bob Requester <bob@corp.example>",
                to_addrs="it@corp.example",
                cc_addrs="carol@corp.example",
                subject="Printer on fire",
                text_body="The printer on floor three is smoking like a xylophone.\n",
            )
            s.add(m1)
            sha = hashlib.sha256(PHOTO).hexdigest()
            s.add(Blob(sha256=sha, size=len(PHOTO), data=zlib.compress(PHOTO)))
            s.flush()
            s.add(
                Attachment(
                    message_id=m1.id,
                    filename="smoke.jpg",
                    media_type="image/jpeg",
                    size=len(PHOTO),
                    sha256=sha,
                )
            )
            s.add(TicketFlag(ticket_id=t1.id, flag="parse-error", detail="charset x-bogus"))
            s.flush()
            claim(s, t1.id, 1, alice)
            add_note(s, t1.id, 2, alice, "Called facilities about the printer.")
            set_tags(s, t1.id, 3, alice, ["hardware", "Fire"])

            # 2: another queue, pending
            t2 = open_ticket(s, queue=hr, requester=carol, subject="Holiday request")
            s.add(
                _inbound(
                    t2.id,
                    from_addr="carol@corp.example",
                    to_addrs="hr@corp.example",
                    subject="Holiday request",
                    text_body="Two weeks in August please.",
                )
            )
            s.flush()
            set_status(s, t2.id, 1, alice, Status.PENDING)

            # 3: hostile text everywhere a requester controls it
            t3 = open_ticket(s, queue=it, requester=mallory, subject=HOSTILE_SUBJECT)
            s.add(
                _inbound(
                    t3.id,
                    from_addr="\u202eMallory\x1b[2J <mallory@evil.example>",
                    to_addrs="it@corp.example\x1b]0;x\x07",
                    subject=HOSTILE_SUBJECT,
                    text_body=HOSTILE_BODY,
                )
            )

            # 4: hostile attachment media type (from a Content-Type header) and tag
            t4 = open_ticket(s, queue=it, requester=mallory, subject="Invoice attached")
            m4 = _inbound(t4.id, from_addr="mallory@evil.example", subject="Invoice")
            s.add(m4)
            s.flush()
            s.add(
                Attachment(
                    message_id=m4.id,
                    filename="invoice\u202efdp.exe",
                    media_type="application/x\x1b]0;pwned\x07",
                    size=len(PHOTO),
                    sha256=sha,
                )
            )
            s.flush()
            # set_tags refuses such a tag; a row written by other means must still
            # be displayed harmlessly.
            s.add(TicketTag(ticket_id=t4.id, tag="\x1b]0;tagged\x07"))
            return {"printer": t1.id, "holiday": t2.id, "hostile": t3.id, "invoice": t4.id}
    finally:
        ws.close()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    home = tmp_path_factory.mktemp("seeded")
    db_file = home / "deskq.db"
    config = home / "config.toml"
    config.write_text(SEEDED_CONFIG.format(db=db_file), encoding="utf-8")
    ids = seed(config)
    yield Seeded(home, config, db_file, make_env(home, config), ids)


def ids_of(items: list[dict[str, Any]]) -> list[int]:
    return [item["id"] for item in items]


def test_list_json(seeded: Seeded) -> None:
    items = seeded.json("list", "--json")
    ids = seeded.ids
    assert ids_of(items) == [ids["printer"], ids["holiday"], ids["hostile"], ids["invoice"]]
    printer = items[0]
    assert {
        "id",
        "queue",
        "subject",
        "status",
        "priority",
        "requester",
        "assignee",
        "created_at",
        "messages",
        "flags",
        "tags",
    } <= set(printer)
    assert printer["queue"] == "it"
    assert printer["subject"] == "Printer on fire"
    assert (printer["status"], printer["priority"]) == ("open", "normal")
    assert printer["requester"] == {"address": "bob@corp.example", "name": "Bob Requester"}
    assert printer["assignee"] == {"address": "alice@corp.example", "name": "Alice Agent"}
    assert printer["created_at"].endswith("Z")
    assert datetime.fromisoformat(printer["created_at"]).tzinfo is not None
    assert printer["messages"] == 2  # the inbound mail and the note
    assert printer["flags"] == ["parse-error"]
    assert printer["tags"] == ["fire", "hardware"]
    assert printer["version"] == 4
    holiday = items[1]
    assert (holiday["queue"], holiday["status"], holiday["assignee"]) == ("hr", "pending", None)
    assert (holiday["messages"], holiday["flags"], holiday["tags"]) == (1, [], [])


def test_list_json_escapes_hostile_text(seeded: Seeded) -> None:
    result = seeded.run("list", "--json")
    assert result.returncode == 0, result.stderr
    assert_safe_for_terminal(result.stdout)
    assert result.stdout.isascii()
    hostile = next(i for i in json.loads(result.stdout) if i["id"] == seeded.ids["hostile"])
    assert hostile["subject"] == HOSTILE_SUBJECT  # escaped in JSON, not altered


def test_list_by_queue(seeded: Seeded) -> None:
    ids = seeded.ids
    assert ids_of(seeded.json("list", "--json", "--queue", "hr")) == [ids["holiday"]]
    assert ids_of(seeded.json("list", "--json", "--queue", "it")) == [
        ids["printer"],
        ids["hostile"],
        ids["invoice"],
    ]


def test_list_by_status(seeded: Seeded) -> None:
    ids = seeded.ids
    assert ids_of(seeded.json("list", "--json", "--status", "open,new")) == [
        ids["printer"],
        ids["hostile"],
        ids["invoice"],
    ]
    assert ids_of(seeded.json("list", "--json", "--status", " Pending ")) == [ids["holiday"]]
    assert seeded.json("list", "--json", "--status", "closed") == []
    assert ids_of(seeded.json("list", "--json", "--status", "new", "--queue", "it")) == [
        ids["hostile"],
        ids["invoice"],
    ]


def test_list_bad_status(seeded: Seeded) -> None:
    result = seeded.run("list", "--status", "open,bogus")
    assert_user_error(result, 2, "--status", "'bogus'", STATUSES)
    assert result.stdout == ""


def test_list_bad_queue(seeded: Seeded) -> None:
    result = seeded.run("list", "--queue", "nope")
    assert_user_error(result, 2, "--queue", "'nope'", "it, hr")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("xylophone", ["printer"]),
        ("SMOKING xylophone", ["printer"]),
        ("august", ["holiday"]),
        ("printer", ["printer"]),  # the note and the mail both match: listed once
        ("red alert", ["hostile"]),
        ("zeppelin", []),
        ("xylophone august", []),
        ('"xylophone" OR', []),
        ("xylo*", []),
    ],
)
def test_list_search(seeded: Seeded, words: str, expected: list[str]) -> None:
    found = ids_of(seeded.json("list", "--json", "--search", words))
    assert found == [seeded.ids[name] for name in expected]


def test_list_search_with_no_words(seeded: Seeded) -> None:
    assert seeded.json("list", "--json", "--search", "!!!") == []


def test_show_json(seeded: Seeded) -> None:
    ticket = seeded.json("show", str(seeded.ids["printer"]), "--json")
    assert ticket["id"] == seeded.ids["printer"]
    assert ticket["subject"] == "Printer on fire"
    assert ticket["flags"] == [{"flag": "parse-error", "detail": "charset x-bogus"}]
    assert ticket["tags"] == ["fire", "hardware"]
    mail, note = ticket["messages"]
    assert {
        "direction",
        "from",
        "to",
        "cc",
        "date",
        "subject",
        "message_id",
        "text",
        "attachments",
        "threaded_by",
    } <= set(mail)
    assert mail["direction"] == "inbound"
    assert mail["from"] == "Bob Requester <bob@corp.example>"
    assert (mail["to"], mail["cc"]) == ("it@corp.example", "carol@corp.example")
    assert mail["date"] == "2024-05-06T07:08:09Z"
    assert mail["subject"] == "Printer on fire"
    assert mail["message_id"] == "<m1@corp.example>"
    assert mail["text"] == "The printer on floor three is smoking like a xylophone.\n"
    assert mail["threaded_by"] == "new"
    assert mail["attachments"] == [
        {
            "filename": "smoke.jpg",
            "media_type": "image/jpeg",
            "size": len(PHOTO),
            "sha256": hashlib.sha256(PHOTO).hexdigest(),
            "inline": False,
        }
    ]
    assert (note["direction"], note["from"], note["threaded_by"]) == (
        "note",
        "alice@corp.example",
        "note",
    )
    assert note["text"] == "Called facilities about the printer."
    assert note["attachments"] == []
    events = ticket["events"]
    assert [e["kind"] for e in events] == ["created", "assignment", "status", "note", "tags"]
    assert [e["version"] for e in events] == [1, 2, 2, 3, 4]
    assert events[0]["actor"] is None
    assert all(e["actor"] == "alice@corp.example" for e in events[1:])
    assert all(e["at"].endswith("Z") for e in events)
    assert events[1]["data"] == {"from": None, "to": "alice@corp.example"}
    assert events[2]["data"] == {"from": "new", "to": "open"}
    assert events[3]["data"] == {"message": note["id"]}
    assert events[4]["data"] == {"added": ["fire", "hardware"], "removed": []}


def test_show_missing_ticket(seeded: Seeded) -> None:
    result = seeded.run("show", "999")
    assert_user_error(result, 1, "no ticket #999")
    assert result.stdout == ""


def test_plain_list(seeded: Seeded) -> None:
    result = seeded.run("list")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert_safe_for_terminal(out)
    lines = out.splitlines()
    assert lines[0].split()[0] == "ID" and lines[-1] == "(4 tickets)"
    assert len(lines) == 6
    printer = lines[1].split()
    assert printer[:4] == [str(seeded.ids["printer"]), "it", "open", "normal"]
    assert printer[5:8] == ["bob@corp.example", "alice", "[parse-error]"]
    assert lines[1].endswith("[parse-error] Printer on fire")
    assert lines[2].split()[:4] == [str(seeded.ids["holiday"]), "hr", "pending", "normal"]
    hostile = lines[3]
    assert hostile.startswith(f"{seeded.ids['hostile']:>6} it ")
    assert hostile.endswith("[bold red]URGENT[/] evil")
    assert "pwned" not in out
    assert all(len(line) <= 120 for line in lines)


def test_plain_show(seeded: Seeded) -> None:
    result = seeded.run("show", str(seeded.ids["printer"]))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"#{seeded.ids['printer']} [it] Printer on fire\n")
    assert "status open, priority normal, assigned to alice@corp.example, version 4\n" in out
    assert "requester Bob Requester <bob@corp.example>, created " in out
    assert "category -, tags fire, hardware\n" in out
    assert "FLAG parse-error: charset x-bogus\n" in out
    assert "From: Bob Requester <bob@corp.example>\nTo: it@corp.example\n" in out
    assert "Cc: carol@corp.example\nSubject: Printer on fire\n\n" in out
    assert "The printer on floor three is smoking like a xylophone.\n" in out
    assert f"[attachment] smoke.jpg (image/jpeg, {len(PHOTO)} bytes)\n" in out
    assert "\n--- note #" in out and "Called facilities about the printer.\n" in out
    history = out.split("\n--- history\n", 1)[1].splitlines()
    assert [line.split()[2] for line in history] == [
        "created",
        "assignment",
        "status",
        "note",
        "tags",
    ]


def test_plain_show_hostile_ticket(seeded: Seeded) -> None:
    result = seeded.run("show", str(seeded.ids["hostile"]))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert_safe_for_terminal(out)
    assert "pwned" not in out
    assert out.startswith(f"#{seeded.ids['hostile']} [it] [bold red]URGENT[/] evil\n")
    assert "Subject: [bold red]URGENT[/] evil\n" in out
    assert "requester Malyrol <mallory@evil.example>" in out
    assert "From: Mallory <mallory@evil.example>\n" in out
    assert "red alert in the 2J body fdp.exe" in out


def _show_line(seeded: Seeded, name: str, prefix: str) -> str:
    result = seeded.run("show", str(seeded.ids[name]))
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(prefix)]
    return line


def test_plain_show_sanitises_attachment_media_type(seeded: Seeded) -> None:
    line = _show_line(seeded, "invoice", "[attachment] ")
    assert line.startswith("[attachment] invoicefdp.exe (")  # the filename is sanitised
    assert_safe_for_terminal(line)


def test_plain_show_sanitises_tags(seeded: Seeded) -> None:
    line = _show_line(seeded, "invoice", "category ")
    assert line.startswith("category -, tags ")
    assert_safe_for_terminal(line)


def test_show_json_escapes_hostile_text(seeded: Seeded) -> None:
    result = seeded.run("show", str(seeded.ids["hostile"]), "--json")
    assert result.returncode == 0, result.stderr
    assert_safe_for_terminal(result.stdout)
    ticket = json.loads(result.stdout)
    assert ticket["subject"] == HOSTILE_SUBJECT
    assert ticket["messages"][0]["text"] == HOSTILE_BODY


# --------------------------------------------------------------------------- bad input


def test_missing_config_file(tmp_path: Path) -> None:
    config = tmp_path / "nowhere" / "config.toml"
    result = run(make_env(tmp_path, config), "list")
    assert_user_error(result, 2, str(config), "does not exist", "deskq init")
    assert result.stdout == ""


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    config = tmp_path / "nowhere" / "config.toml"
    result = run(make_env(tmp_path, config), "--debug", "list")
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "store.config.ConfigError: config error in" in result.stderr
    assert str(config) in result.stderr


def test_explicit_config_beats_the_environment(tmp_path: Path, seeded: Seeded) -> None:
    env = make_env(tmp_path, tmp_path / "nowhere.toml")
    result = run(env, "--config", str(seeded.config), "list", "--json", "--queue", "hr")
    assert result.returncode == 0, result.stderr
    assert ids_of(json.loads(result.stdout)) == [seeded.ids["holiday"]]


def test_config_with_an_unknown_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[database]\nurll = "sqlite:///x.db"\n', encoding="utf-8")
    result = run(make_env(tmp_path, config), "list")
    assert_user_error(result, 2, str(config), "key 'database.urll'", "did you mean 'url'?")
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("password", [None, "hunter2-pg"])
def test_unreachable_postgres(tmp_path: Path, password: str | None) -> None:
    config = tmp_path / "config.toml"
    text = '[database]\nurl = "postgresql+psycopg://nobody@127.0.0.1:9/x"\n'
    extra = {}
    if password:
        text += 'password_env = "DESKQ_TEST_DB_PASSWORD"\n'
        extra["DESKQ_TEST_DB_PASSWORD"] = password
    config.write_text(text, encoding="utf-8")
    result = run(make_env(tmp_path, config, **extra), "list")
    user = "nobody:***" if password else "nobody"
    err = assert_user_error(
        result, 1, f"cannot open the database postgresql+psycopg://{user}@127.0.0.1:9/x"
    )
    assert "hunter2" not in err + result.stdout


@pytest.mark.parametrize("command", [("list",), ("config", "check")])
def test_database_url_with_a_bad_port(tmp_path: Path, command: tuple[str, ...]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[database]\nurl = "postgresql+psycopg://u:hunter2@127.0.0.1:notaport/x"\n',
        encoding="utf-8",
    )
    result = run(make_env(tmp_path, config), *command)
    assert "Traceback" not in result.stderr, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    if command == ("list",):
        assert result.returncode in (1, 2)
        assert result.stderr.startswith("deskq: ") and result.stderr.count("\n") == 1
    else:
        assert result.returncode in (0, 2)


def test_database_url_with_a_missing_driver(tmp_path: Path) -> None:
    assert find_spec("psycopg2") is None
    config = tmp_path / "config.toml"
    config.write_text(
        '[database]\nurl = "postgresql+psycopg2://u:hunter2@127.0.0.1:9/x"\n', encoding="utf-8"
    )
    err = assert_user_error(run(make_env(tmp_path, config), "list"), 1, "psycopg2")
    assert "hunter2" not in err


def _fresh_database(path: Path) -> Path:
    db_file = path / "deskq.db"
    Database.open(f"sqlite:///{db_file}").close()
    config = path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{db_file}"\n', encoding="utf-8")
    return config


def test_database_from_a_newer_deskq(tmp_path: Path) -> None:
    config = _fresh_database(tmp_path)
    db_file = tmp_path / "deskq.db"
    with sqlite3.connect(db_file) as conn:
        conn.execute("UPDATE alembic_version SET version_num='9999'")
    env = make_env(tmp_path, config)
    assert_user_error(run(env, "list"), 1, "newer deskq", "9999", SCHEMA_HEAD)
    assert_user_error(run(env, "db", "upgrade"), 1, "newer deskq")
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("9999",)]


def test_database_of_another_app(tmp_path: Path) -> None:
    db_file = tmp_path / "other.db"
    with sqlite3.connect(db_file) as conn:
        conn.execute("CREATE TABLE inventory (sku TEXT PRIMARY KEY, qty INTEGER)")
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{db_file}"\n', encoding="utf-8")
    result = run(make_env(tmp_path, config), "list")
    assert_user_error(result, 1, str(db_file), "inventory", "belongs to something else")
    with sqlite3.connect(db_file) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("inventory",)]  # untouched


def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    db_file = tmp_path / "notes.db"
    db_file.write_text("shopping list\n" * 100, encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{db_file}"\n', encoding="utf-8")
    result = run(make_env(tmp_path, config), "list")
    assert_user_error(result, 1, "cannot open the database", "not a database")
    assert db_file.read_text(encoding="utf-8") == "shopping list\n" * 100


# --------------------------------------------------------------------------- lazy imports

NO_TEXTUAL = """\
import sys
from tui.cli import main
try:
    rc = main({argv!r})
except SystemExit as exc:
    rc = exc.code
assert rc == 0, rc
assert 'tui.cli' in sys.modules
assert 'textual' not in sys.modules, 'textual imported'
"""


def test_help_does_not_import_textual(tmp_path: Path) -> None:
    assert find_spec("textual") is not None  # otherwise this test proves nothing
    result = run_python(make_env(tmp_path, tmp_path / "c.toml"), NO_TEXTUAL.format(argv=["--help"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: deskq")


def test_list_does_not_import_textual(seeded: Seeded) -> None:
    result = run_python(seeded.env, NO_TEXTUAL.format(argv=["list"]))
    assert result.returncode == 0, result.stderr
    assert "(4 tickets)" in result.stdout
