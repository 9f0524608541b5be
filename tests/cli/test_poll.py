"""``deskq poll`` as a service runs it: until SIGTERM, logging to stderr."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

DESKQ = str(Path(sys.executable).parent / "deskq")
MAIL = (
    b"From: Bob <bob@corp.example>\nTo: it@corp.example\nSubject: Printer jam\n"
    b"Message-ID: <jam-1@corp.example>\n\nTray 2 again.\n"
)


def _config(tmp_path: Path) -> Path:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "deskq.db"}"\n'
        f'[[mailbox]]\nname = "local"\nsource = "maildir"\npath = "{maildir}"\n'
        "poll_interval = 1\n"
        '[[queue]]\nkey = "it"\nname = "IT Help"\ntag = "IT"\naddress = "it@corp.example"\n',
        encoding="utf-8",
    )
    return config


def _tickets(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM tickets").fetchone()[0])
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def test_poll_runs_until_sigterm_and_stops_cleanly(tmp_path: Path) -> None:
    config = _config(tmp_path)
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [DESKQ, "--config", str(config), "poll"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(0.5)
        (tmp_path / "Maildir" / "new" / "1.mail").write_bytes(MAIL)
        deadline = time.monotonic() + 20
        while _tickets(tmp_path / "deskq.db") < 1:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "mail not ingested by the running poller"
            time.sleep(0.1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stderr.read() if proc.stderr else ""
    assert code == 0, log
    assert elapsed < 5, f"took {elapsed:.1f} s to stop"
    assert "polling 1 mailbox(es): local" in log and "mailbox local: 1 new" in log
    assert "INFO mail.poller: stopped" in log
    assert "Traceback" not in log
    assert [p.name[-4:] for p in (tmp_path / "Maildir" / "cur").iterdir()] == [":2,S"]


def test_a_second_poller_stands_by_and_poll_once_skips_a_worked_mailbox(tmp_path: Path) -> None:
    """Two ``deskq poll`` on one database: one works the mailbox, the other stands by and
    takes over at once when the first stops; ``--once`` leaves a worked mailbox alone."""
    config = _config(tmp_path)
    env = {**os.environ, "HOME": str(tmp_path)}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [DESKQ, "--config", str(config), "poll"], env=env, stderr=subprocess.PIPE, text=True
        )

    first = start()
    second: subprocess.Popen[str] | None = None
    try:
        (tmp_path / "Maildir" / "new" / "1.mail").write_bytes(MAIL)
        deadline = time.monotonic() + 20
        while _tickets(tmp_path / "deskq.db") < 1:
            assert time.monotonic() < deadline, "mail not ingested by the first poller"
            time.sleep(0.1)
        second = start()
        once = subprocess.run(
            [DESKQ, "--config", str(config), "poll", "--once"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert once.returncode == 0, once.stderr
        assert f":{first.pid}:" in once.stderr and "skipped" in once.stderr, once.stderr
        first.send_signal(signal.SIGTERM)  # a clean stop releases the lease at once
        assert first.wait(timeout=15) == 0
        (tmp_path / "Maildir" / "new" / "2.mail").write_bytes(
            MAIL.replace(b"jam-1", b"jam-2").replace(b"Printer jam", b"Scanner jam")
        )
        deadline = time.monotonic() + 10
        while _tickets(tmp_path / "deskq.db") < 2:
            assert time.monotonic() < deadline, "the standby did not take over"
            time.sleep(0.1)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=15) == 0
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    first_log = first.stderr.read() if first.stderr else ""
    second_log = second.stderr.read() if second and second.stderr else ""
    assert "working it" in first_log, first_log
    assert "standing by" in second_log and "taking over from" in second_log, second_log
    assert "mailbox local: 1 new" in second_log
    assert "it stopped and let go" in second_log
