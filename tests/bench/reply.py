"""Reply benchmark: render, queue and deliver 1,000 replies through a real SMTP server.

On a demo workspace (SQLite), for each of N tickets: render a template into a draft
(``compose``), then queue it the way the TUI's send key does (``Desk.send_reply``: the
outgoing message, its event, its status change and the outbox entry in one commit).
Then the sender delivers everything to aiosmtpd over STARTTLS with AUTH. The baseline,
measured in the same run, is plain smtplib sending the same bytes over one connection.

Prints one JSON line. Target: p95 from the send key to the outbox commit < 50 ms.
Usage: python tests/bench/reply.py [--replies 1000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import smtplib
import ssl
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=1000)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Session.login_data is deprecated")
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's own logger

    from mail import sender
    from mail.poller import poll_once
    from store.config import load_settings
    from store.query import Query
    from store.workspace import open_workspace
    from tests.smtp_server import PASSWORD, USER, SmtpServer
    from tui import demo
    from tui.desk import Desk

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["DESKQ_TEST_SMTP_PASSWORD"] = PASSWORD
        server = SmtpServer(root).start()
        # Follow-ups thread into earlier requests: about 3 tickets for 4 emails.
        config = demo.create(root / "ws", count=args.replies * 3 // 2 + 50)
        text = config.read_text()
        start = text.index("[sending]")
        end = text.index("\n\n", start)
        config.write_text(text[:start] + server.sending_toml() + text[end:])
        ws = open_workspace(load_settings(config))
        poll_once(ws)
        desk = Desk(ws)
        tickets = [r.ticket.id for r in desk.first_page(Query(), 10**6)]
        compose_ms, commit_ms = [], []
        for tid in tickets[: args.replies]:
            t0 = time.perf_counter()
            draft = desk.compose(tid, "need-info", {"question": "Which model is it?"})
            t1 = time.perf_counter()
            desk.send_reply(draft)
            t2 = time.perf_counter()
            compose_ms.append((t1 - t0) * 1000)
            commit_ms.append((t2 - t1) * 1000)
        queued = len(commit_ms)
        raws = [c.raw for c in sender.claim(ws.db, limit=queued)]
        with ws.db.write() as s:  # give them back: the sender claims them for real below
            from sqlalchemy import update

            from store.models import OutboxItem, OutboxState, utcnow

            s.execute(
                update(OutboxItem).values(
                    state=OutboxState.QUEUED, attempts=0, next_attempt_at=utcnow()
                )
            )
        t0 = time.perf_counter()
        context = ssl.create_default_context(cafile=server.ca_file)
        with smtplib.SMTP("localhost", server.port) as smtp:
            smtp.starttls(context=context)
            smtp.login(USER, PASSWORD)
            for raw in raws:
                smtp.sendmail("it-help@corp.example", ["x@corp.example"], raw)
        baseline_s = time.perf_counter() - t0
        before = len(server.received)
        t0 = time.perf_counter()
        sent = 0
        while sent < queued:
            report = sender.send_due(ws.db, sender.make_transport(ws.settings.sending), limit=200)
            if not report.sent:
                break
            sent += len(report.sent)
        deliver_s = time.perf_counter() - t0
        assert len(server.received) - before == queued, "every reply delivered exactly once"
        server.stop()
        ws.close()
    print(
        json.dumps(
            {
                "bench": "reply",
                "replies": queued,
                "render_p50_ms": round(statistics.median(compose_ms), 2),
                "render_p95_ms": round(pct(compose_ms, 0.95), 2),
                "send_key_to_commit_p50_ms": round(statistics.median(commit_ms), 2),
                "send_key_to_commit_p95_ms": round(pct(commit_ms, 0.95), 2),
                "deliver_msgs_per_s": round(queued / deliver_s, 1),
                "plain_smtplib_msgs_per_s": round(queued / baseline_s, 1),
                "ratio_to_plain_smtp": round(baseline_s / deliver_s, 2),
                "target": {"send_key_to_commit_p95_ms": "< 50"},
            }
        )
    )


if __name__ == "__main__":
    main()
