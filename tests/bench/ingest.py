"""Ingestion benchmark: real Dovecot, real SQLite, the real ``deskq poll``.

Seeds a private Dovecot (MULTIAPPEND) with realistic messages (mixed sizes, some
HTML-only, some with attachments, some threaded replies) and measures in one run:

  (a) a plain imapclient FETCH of the whole folder: the ceiling;
  (b) ``deskq poll --once`` end to end into SQLite, as a ratio of (a);
  (c) the delay from APPEND to the ticket being committed, with IDLE (``deskq poll``);
  (d) peak memory of (b), and of a larger backlog to show it stays flat;
  (e) (a) and (b) again through a relay that behaves like a network link (by default
      200 Mbit/s with 5 ms each way): a mail server is rarely on the same machine;
  (f) where (b)'s time goes: deskq's own fetch-and-parse pipeline with a stand-in that
      stores nothing (after start-up), and ``deskq poll --once`` with nothing new
      (start-up and one SEARCH).

Prints one JSON line. Usage: python tests/bench/ingest.py [--messages N] [--backlog N]
Targets: (b) >= 2,000 msg/s and >= 0.2 of (a); (c) p50 <= 1.0 s; backlog of 100,000
in < 60 s with flat memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from imapclient import IMAPClient

from mail.demo_mail import generate
from tests.bench.link import link
from tests.servers import Dovecot, dovecot_unavailable_reason

DESKQ = str(Path(sys.executable).parent / "deskq")
# The demo mail's three queues (the generator addresses its aliases).
QUEUES = """
[[queue]]
key = "it"
name = "IT Help"
tag = "IT"
address = "it-help@corp.example"
aliases = ["it@corp.example"]
[[queue]]
key = "hr"
name = "People Team"
tag = "HR"
address = "hr@corp.example"
aliases = ["people@corp.example"]
[[queue]]
key = "facilities"
name = "Facilities"
tag = "FAC"
address = "facilities@corp.example"
aliases = ["office@corp.example"]
"""
FILLER = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod. " * 14


def corpus(count: int, seed: int) -> list[bytes]:
    """Realistic messages: the demo generator, with some made large (40-200 KB)."""
    rng = random.Random(seed)
    out = []
    for mail in generate(count, seed=seed):
        raw = mail.raw
        if rng.random() < 0.05:
            raw = raw.replace(
                b"Best regards", (FILLER * rng.randint(40, 200)).encode() + b"\r\nBest regards", 1
            )
        out.append(raw)
    return out


def compile_deskq() -> None:
    """Byte-compile deskq's own modules, as installing it does (pip writes .pyc files).

    A checkout run with PYTHONDONTWRITEBYTECODE=1 has none, and every ``deskq``
    started here would compile its source again: 0.05 s a start, measured.
    """
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    packages = [str(root / name) for name in ("mail", "store", "tui")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], env=env, check=True)


def seed_folder(dovecot: Dovecot, user: str, password: str, messages: list[bytes]) -> None:
    with IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False) as client:
        client.login(user, password)
        for start in range(0, len(messages), 500):
            client.multiappend("INBOX", messages[start : start + 500])


def plain_fetch(dovecot: Dovecot, user: str, password: str, port: int | None = None) -> float:
    """Messages per second of a bare FETCH BODY.PEEK[] of the whole folder."""
    with IMAPClient(dovecot.host, port=port or dovecot.imap_port, ssl=False) as client:
        client.login(user, password)
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        started = time.perf_counter()
        for start in range(0, len(uids), 500):
            client.fetch(uids[start : start + 500], ["BODY.PEEK[]"])
        return len(uids) / (time.perf_counter() - started)


def mailbox_toml(dovecot: Dovecot, user: str, name: str, port: int | None = None) -> str:
    """The ``[[mailbox]]`` of a benchmark account (password in BENCH_IMAP_PASSWORD)."""
    return f"""
[[mailbox]]
name = "{name}"
source = "imap"
host = "127.0.0.1"
port = {port or dovecot.imap_port}
security = "none"
username = "{user}"
password_env = "BENCH_IMAP_PASSWORD"
after = "seen"
default_queue = "it"
"""


def write_config(root: Path, dovecot: Dovecot, user: str, port: int | None = None) -> Path:
    config = root / "config.toml"
    config.write_text(
        f"""
me = "bench@corp.example"
[database]
url = "sqlite:///{root / "deskq.db"}"
[ingest]
batch_size = 500
"""
        + mailbox_toml(dovecot, user, "bench", port)
        + QUEUES,
        encoding="utf-8",
    )
    subprocess.run([DESKQ, "--config", str(config), "init"], check=True, capture_output=True)
    return config


def poll_once(config: Path, password: str) -> tuple[float, int, float]:
    """(seconds, peak RSS in KB, CPU seconds of deskq and its parse worker together)
    of one ``deskq poll --once``."""
    env = {**os.environ, "BENCH_IMAP_PASSWORD": password}
    script = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], check=True)\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(time.perf_counter() - t, u.ru_maxrss, u.ru_utime + u.ru_stime)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, DESKQ, "--config", str(config), "poll", "--once"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    seconds, rss, cpu = done.stdout.split()
    return float(seconds), int(rss), float(cpu)


# (f): deskq's IMAP pass (fetch ahead, parse worker) with an ingestor that stores nothing.
STORE_NOTHING = """
import dataclasses, sys, time
from pathlib import Path
started = time.perf_counter()
from mail import pipeline
from mail.imap import ImapSource
from mail.ingest import Ingestor, Outcome
from store.config import load_settings
from store.workspace import open_workspace

class StoreNothing(Ingestor):
    def store_batch(self, batch, **_):
        return [Outcome(p.item.uid, "new") for p in batch]

settings = load_settings(Path(sys.argv[1]))
workspace = open_workspace(settings)
pipeline.tune_for_bulk()
mailbox = dataclasses.replace(settings.mailbox[0], after="none")
source = ImapSource(mailbox, settings, StoreNothing(settings, workspace.db))
ready = time.perf_counter()
done = len(source.pass_once())
print(done, time.perf_counter() - ready, ready - started)
"""


def store_nothing(config: Path, password: str) -> tuple[int, float, float]:
    """(messages, seconds of the pass, seconds of start-up) of (f)'s stand-in."""
    env = {**os.environ, "BENCH_IMAP_PASSWORD": password}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", STORE_NOTHING, str(config)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"(f) failed: {done.stderr[-2000:]}")
    count, seconds, start = done.stdout.split()
    return int(count), float(seconds), float(start)


def count_raw(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM raw_sources").fetchone()[0])


def idle_delays(dovecot: Dovecot, root: Path, samples: int) -> list[float]:
    """APPEND-to-commit delays with ``deskq poll`` running (IDLE)."""
    user, password = dovecot.take_user()
    seed_folder(dovecot, user, password, [])
    config = write_config(root, dovecot, user)
    db = root / "deskq.db"
    env = {**os.environ, "BENCH_IMAP_PASSWORD": password}
    proc = subprocess.Popen(
        [DESKQ, "--config", str(config), "poll"], env=env, stderr=subprocess.DEVNULL
    )
    delays = []
    try:
        with IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False) as client:
            client.login(user, password)
            time.sleep(1.5)  # let the poller connect and enter IDLE
            messages = corpus(samples, seed=99)
            for index, raw in enumerate(messages, start=1):
                started = time.perf_counter()
                client.append("INBOX", raw)
                while count_raw(db) < index:
                    if time.perf_counter() - started > 30:
                        raise RuntimeError("message not ingested within 30 s")
                    time.sleep(0.01)
                delays.append(time.perf_counter() - started)
                time.sleep(random.uniform(0.05, 0.3))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--idle-samples", type=int, default=50)
    parser.add_argument("--link-mbit", type=float, default=200, help="0: no link run")
    parser.add_argument("--link-latency-ms", type=float, default=5)
    args = parser.parse_args()
    reason = dovecot_unavailable_reason()
    if reason:
        sys.exit(f"cannot run: {reason}")
    compile_deskq()
    work = Path(tempfile.mkdtemp(prefix="deskq-bench-"))
    dovecot = Dovecot.start(work, users=8)
    try:
        result: dict[str, object] = {"bench": "ingest", "messages": args.messages}
        user, password = dovecot.take_user()
        seed_folder(dovecot, user, password, corpus(args.messages, seed=1))
        ceiling = plain_fetch(dovecot, user, password)
        run = work / "run"
        run.mkdir()
        seconds, rss, cpu = poll_once(write_config(run, dovecot, user), password)
        stored = count_raw(run / "deskq.db")
        assert stored == args.messages, (stored, args.messages)
        rate = args.messages / seconds
        result.update(
            plain_fetch_msgs_per_s=round(ceiling),
            poll_once_msgs_per_s=round(rate),
            ratio_to_fetch=round(rate / ceiling, 3),
            peak_rss_mb=round(rss / 1024, 1),
            # What bounds (b) on a small machine: deskq's CPU time (poller and parse
            # worker) against the cores it has (Dovecot needs some too).
            poll_once_cpu_s=round(cpu, 2),
            cpu_cores=os.cpu_count(),
        )
        # (f) The same pass storing nothing, and a pass with nothing new.
        parse_only = work / "parse-only"
        parse_only.mkdir()
        count, pass_seconds, start_seconds = store_nothing(
            write_config(parse_only, dovecot, user), password
        )
        assert count == args.messages, (count, args.messages)
        empty_seconds, _, _ = poll_once(run / "config.toml", password)
        result.update(
            store_nothing_msgs_per_s=round(count / pass_seconds),
            store_nothing_ratio_to_fetch=round(count / pass_seconds / ceiling, 3),
            store_nothing_startup_s=round(start_seconds, 2),
            nothing_new_poll_once_s=round(empty_seconds, 2),
        )
        if args.link_mbit:
            with link(dovecot.imap_port, args.link_mbit, args.link_latency_ms) as relay:
                linked_ceiling = plain_fetch(dovecot, user, password, relay.port)
                linked = work / "linked"
                linked.mkdir()
                config = write_config(linked, dovecot, user, relay.port)
                seconds3, _, _ = poll_once(config, password)
            assert count_raw(linked / "deskq.db") == args.messages
            linked_rate = args.messages / seconds3
            result.update(
                link=f"{args.link_mbit:g} Mbit/s, {args.link_latency_ms:g} ms each way",
                link_plain_fetch_msgs_per_s=round(linked_ceiling),
                link_poll_once_msgs_per_s=round(linked_rate),
                link_ratio_to_fetch=round(linked_rate / linked_ceiling, 3),
            )
        if args.backlog:
            user2, password2 = dovecot.take_user()
            seed_folder(dovecot, user2, password2, corpus(args.backlog, seed=2))
            backlog = work / "backlog"
            backlog.mkdir()
            seconds2, rss2, _ = poll_once(write_config(backlog, dovecot, user2), password2)
            assert count_raw(backlog / "deskq.db") == args.backlog
            result.update(
                backlog=args.backlog,
                backlog_seconds=round(seconds2, 1),
                backlog_peak_rss_mb=round(rss2 / 1024, 1),
            )
        if args.idle_samples:
            idle = work / "idle"
            idle.mkdir()
            delays = idle_delays(dovecot, idle, args.idle_samples)
            cuts = statistics.quantiles(delays, n=20)
            result.update(
                idle_delay_p50_s=round(statistics.median(delays), 3),
                idle_delay_p95_s=round(cuts[18], 3),
                idle_samples=len(delays),
            )
        result["peak_rss_bench_mb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        )
        print(json.dumps(result))
    finally:
        dovecot.close()


if __name__ == "__main__":
    main()
