"""The ``deskq`` command. Imports stay lazy: ``deskq --help`` and ``deskq poll`` never
load textual, and each subcommand imports only what it uses."""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from store.config import Settings
    from store.workspace import Workspace

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
# Garbage-collection thresholds while a command starts (see main).
STARTUP_GC = (100_000, 50, 50)


class UserError(Exception):
    """A problem to report in one paragraph, without a traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def _settings(args: argparse.Namespace) -> Settings:
    from store.config import load_settings, resolve_config_path

    return load_settings(resolve_config_path(args.config))


def clock_progress(done: int, total: int) -> None:
    """Progress of computing SLA clocks (after a rule change or the upgrade that adds them)."""
    end = "\n" if done >= total else "\r"
    if sys.stderr.isatty():  # a log line says it too (store.clocks), for services
        sys.stderr.write(
            f"deskq: SLA rules changed: recomputed clocks of {done:,}/{total:,} tickets{end}"
        )
        sys.stderr.flush()


def migration_report(line: str) -> None:
    """How a migration of the database goes (a log line says it too, for services)."""
    if sys.stderr.isatty():
        print(f"deskq: {line}", file=sys.stderr, flush=True)


def _workspace(args: argparse.Namespace) -> Workspace:
    from store.workspace import open_workspace

    return open_workspace(_settings(args), progress=clock_progress, report=migration_report)


# --------------------------------------------------------------------------- commands


def cmd_tui(args: argparse.Namespace) -> int:
    """Without a subcommand: the terminal UI (with the poller in the background)."""
    from store.config import load_settings, resolve_config_path
    from tui.app import open_for_tui

    ws = open_for_tui(
        load_settings(resolve_config_path(args.config)),
        progress=clock_progress,
        report=migration_report,
    )
    try:
        return run_tui(ws, poll=not args.no_poll)
    finally:
        ws.close()


def run_tui(ws: Workspace, *, poll: bool) -> int:
    """Run the TUI on ``ws``; logs go to a file, never over the screen."""
    from tui.app import make_app

    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise UserError(
            "the terminal UI needs a terminal; use 'deskq list' or 'deskq show ID' in "
            "scripts (see 'deskq --help').",
            EXIT_USAGE,
        )
    _log_to_file()
    make_app(ws, poll=poll, tune_gc=True).run()
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """The TUI in a browser: each visitor gets their own deskq process (textual-serve)."""
    import shlex

    try:
        from textual_serve.server import Server
    except ImportError:
        raise UserError(
            "serving in a browser needs textual-serve: pip install 'deskq[web]'", EXIT_USAGE
        ) from None
    from store.config import load_settings, resolve_config_path

    path = resolve_config_path(args.config)
    load_settings(path)  # a bad config fails here, not in every visitor's session
    deskq = shlex.quote(str(Path(sys.executable).parent / "deskq"))
    # Every visitor gets a process of their own: none of them polls (run 'deskq poll').
    command = f"{deskq} --config {shlex.quote(str(path))} --no-poll"
    if args.host not in ("localhost", "127.0.0.1", "::1"):
        print(
            f"deskq: serving on {args.host}: anyone who reaches this port acts as the "
            "config's 'me'; put it behind a proxy with authentication.",
            file=sys.stderr,
        )
    Server(command, host=args.host, port=args.port, title="deskq").serve()
    return EXIT_OK


def _log_to_file() -> None:
    from platformdirs import user_log_dir

    folder = Path(os.environ.get("DESKQ_LOG_DIR") or user_log_dir("deskq"))
    folder.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(folder / "deskq.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if root.level == logging.DEBUG else logging.INFO)


def cmd_init(args: argparse.Namespace) -> int:
    """Write a starter config (unless one exists) and create the database."""
    import getpass
    import socket

    from store.config import default_data_dir, is_address, load_settings, resolve_config_path
    from store.workspace import open_workspace
    from tui.starter import starter_config

    path = resolve_config_path(args.config)
    if path.exists() and not args.force:
        print(f"config: {path} exists, left as it is (--force to overwrite)")
    else:
        data = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
        me = args.me or f"{getpass.getuser()}@{socket.gethostname() or 'localhost'}"
        if not is_address(me):
            if args.me:
                raise UserError(
                    f"--me: {args.me!r} is not a bare email address like alice@corp.example",
                    EXIT_USAGE,
                )
            me = "you@example.com"
        url = args.database or f"sqlite:///{data / 'deskq.db'}"
        maildir = data / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(starter_config(me, url, maildir), encoding="utf-8")
        print(f"config: wrote {path}")
    settings = load_settings(path)
    ws = open_workspace(settings, report=migration_report)
    try:
        from store.db import masked

        print(f"database: {masked(ws.db.engine.url)} is ready")
    finally:
        ws.close()
    print("next: edit the config, then 'deskq config check' and 'deskq list'")
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate the config and print it as deskq understands it, secrets masked."""
    from tui.config_view import render_effective

    settings = _settings(args)
    print(f"# {settings.path}: valid")
    print(render_effective(settings), end="")
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Migrate the database to this deskq's schema."""
    from store import migrate
    from store.db import Database, masked
    from store.secrets import resolve_password

    settings = _settings(args)
    db = Database.open(
        settings.database.url,
        password=resolve_password(settings.database, "[database]"),
        busy_timeout_ms=settings.database.busy_timeout_ms,
        upgrade=False,
    )
    try:
        changed = migrate.upgrade(db.engine, lambda line: print(f"deskq: {line}", file=sys.stderr))
        state = "migrated to" if changed else "already at"
        print(f"database {masked(db.engine.url)}: {state} schema {migrate.SCHEMA_HEAD}")
    finally:
        db.close()
    return EXIT_OK


def _copy_progress(table: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\x1b[2Kdeskq: copying {table}: {done:,}/{total:,} rows\r")
        sys.stderr.flush()


def cmd_db_copy(args: argparse.Namespace) -> int:
    """Copy the configured database into another (empty) one and verify the copy."""
    from store import dbcopy

    ws = _workspace(args)
    try:
        report = dbcopy.copy(ws.db, args.to, force=args.force, progress=_copy_progress)
    finally:
        ws.close()
    if sys.stderr.isatty():
        sys.stderr.write("\x1b[2K")
    print(f"copied {report.source} to {report.target}")
    print(f"{'TABLE':<16} {'SOURCE':>10} {'TARGET':>10}  CHECK")
    for t in report.tables:
        state = "OK" if t.ok else "MISMATCH"
        print(f"{t.name:<16} {t.source_rows:>10,} {t.target_rows:>10,}  {state}")
    rate = report.rows / report.seconds if report.seconds else 0.0
    print(
        f"{report.rows:,} rows in {len(report.tables)} tables: copied in {report.seconds:.1f} s "
        f"({rate:,.0f} rows/s), verified in {report.verify_seconds:.1f} s"
    )
    if not report.ok:
        raise UserError(
            f"the copy in {report.target} does not match the source in "
            f"{', '.join(report.mismatched)} (counts or checksums differ). Fix: stop anything "
            "writing to either database and copy again with --force."
        )
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    """List tickets, oldest first."""
    from store import access
    from store.views import iter_tickets, parse_statuses
    from tui.output import print_table, write_json_array

    try:
        statuses = parse_statuses(args.status) if args.status else []
    except ValueError as exc:
        raise UserError(f"--status: {exc}", EXIT_USAGE) from None
    ws = _workspace(args)
    try:
        if args.queue and args.queue not in {q.key for q in ws.settings.queue}:
            known = ", ".join(q.key for q in ws.settings.queue) or "none configured"
            raise UserError(f"--queue: no queue {args.queue!r} (queues: {known})", EXIT_USAGE)
        with ws.db.session() as session:
            tickets = iter_tickets(
                session,
                queue=args.queue,
                statuses=statuses,
                search=args.search,
                queue_ids=access.scope_for(session, ws.settings.me),
            )
            if args.json:
                write_json_array(sys.stdout, (t.as_json() for t in tickets))
            else:
                print_table(tickets, now=datetime.now(UTC))
    finally:
        ws.close()
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """Show one ticket with its conversation and history."""
    from sqlalchemy import select

    from store import access
    from store.models import Person
    from store.views import ticket_detail
    from tui.output import print_detail

    ws = _workspace(args)
    try:
        with ws.db.session() as session:
            scope = access.scope_for(session, ws.settings.me)
            visible = access.in_scope(session, scope, args.id)
            detail = ticket_detail(session, args.id) if visible else None
        if detail is None:
            raise UserError(f"there is no ticket #{args.id} in your queues")
        me = ws.settings.me.strip().lower()
        if me:
            with ws.db.write() as session:
                person = session.scalar(select(Person.id).where(Person.address == me))
                if person is not None:
                    access.record_view(session, person, args.id)
        if args.json:
            json.dump(detail.as_json(), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print_detail(detail)
    finally:
        ws.close()
    return EXIT_OK


def cmd_poll(args: argparse.Namespace) -> int:
    """Ingest mail: until stopped, or one pass with --once."""
    import signal
    import threading

    from mail import imapconn, pipeline

    # The parse worker starts (a process of its own, on another core) while this one
    # loads the database layer and opens the database: ready when the first mail is.
    pipeline.warm()
    _poll_logging(args.debug)
    settings = _settings(args)
    if args.mailbox:
        names = {m.name for m in settings.mailbox}
        unknown = [n for n in args.mailbox if n not in names]
        if unknown:
            raise UserError(
                f"--mailbox: no mailbox named {', '.join(unknown)} "
                f"(mailboxes: {', '.join(sorted(names)) or 'none'})",
                EXIT_USAGE,
            )
        import dataclasses

        settings = dataclasses.replace(
            settings, mailbox=tuple(m for m in settings.mailbox if m.name in args.mailbox)
        )
    if not settings.mailbox:
        raise UserError("no [[mailbox]] in the config: nothing to poll", EXIT_USAGE)
    # So are the IMAP connections (TLS, login, SELECT), each in a thread: the first
    # pass takes them (imapconn.connect), or the error opening one failed with. Each
    # thread then begins its mailbox's first pass (imapwire.prefetch: SEARCH, the first
    # batch fetched and handed to the parse worker), which the pass takes if the sync
    # state it reads agrees.
    from mail import imapwire

    imapconn.open_early(settings.mailbox, functools.partial(imapwire.prefetch, settings))
    try:
        from mail.poller import poll_once, run_forever
        from store.workspace import open_workspace

        ws = open_workspace(settings, progress=clock_progress, report=migration_report)
    except BaseException:
        imapconn.discard_early()
        raise
    try:
        progress = _progress_printer() if sys.stderr.isatty() else None
        if args.once:
            failed = 0
            for st in poll_once(ws, progress):
                if st.failures:
                    failed += 1
                    print(f"mailbox {st.name}: FAILED: {st.last_error}", file=sys.stderr)
                elif st.skipped:
                    print(f"mailbox {st.name}: skipped: {st.skipped}", file=sys.stderr)
                else:
                    print(
                        f"mailbox {st.name}: {st.stored} stored, {st.duplicates} already known",
                        file=sys.stderr,
                    )
            if ws.settings.sending is not None:
                from tui.cli_reply import send_now

                for line in send_now(ws):
                    print(f"outbox: {line}", file=sys.stderr)
            return EXIT_FAILURE if failed else EXIT_OK
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        sender = start_sender(ws, stop)
        run_forever(ws, stop, progress)
        if sender is not None:
            sender.join(timeout=10)
    finally:
        imapconn.discard_early()  # a mailbox another poller works: never taken
        ws.close()
    return EXIT_OK


def start_sender(ws: Workspace, stop: Any) -> Any:
    """The outbox sender in a thread (None when no [sending] is configured)."""
    import threading

    from mail import sender

    if ws.settings.sending is None:
        logging.getLogger("mail.sender").info("no [sending] in the config: replies stay queued")
        return None
    settings = ws.settings.sending
    thread = threading.Thread(
        target=sender.run_sender,
        args=(ws.db, lambda: sender.make_transport(settings), stop),
        kwargs={"after_sent": sender.sent_copier(ws.settings, ws.db)},
        name="sender",
        daemon=True,
    )
    thread.start()
    return thread


def _poll_logging(debug: bool) -> None:
    """Logs on stderr: journald adds its own timestamps, humans get ours."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setFormatter(logging.Formatter(fmt))
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def _progress_printer() -> Callable[[str, int, int], None]:
    import time

    begun = time.monotonic()

    def show(name: str, done: int, total: int) -> None:
        if total < 200:
            return
        rate = done / max(time.monotonic() - begun, 1e-3)
        end = "\n" if done >= total else ""
        print(
            f"\r{name}: {done}/{total} messages ({rate:,.0f}/s)",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    return show


def cmd_release(args: argparse.Namespace) -> int:
    """Release a quarantined ticket into its queue."""
    from store import services

    ws = _workspace(args)
    try:
        if not ws.settings.me:
            raise UserError('set me = "your address" in the config to act on tickets')
        with ws.db.write() as session:
            actor = services.get_or_create_person(session, ws.settings.me, provider=True)
            services.release(session, args.id, None, actor)
        print(f"ticket #{args.id} released from quarantine")
    finally:
        ws.close()
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Create a demo workspace, ingest its mailbox through the real poller, show the queue."""
    import tempfile

    from mail.poller import poll_once
    from store.config import load_settings
    from store.views import iter_tickets
    from store.workspace import open_workspace
    from tui import demo
    from tui.output import print_table

    root = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="deskq-demo-"))
    if root.exists() and any(root.iterdir()) and not (root / "config.toml").exists():
        raise UserError(f"--dir {root} is not empty and holds no demo: choose another folder")
    config = root / "config.toml"
    fresh = not config.exists()
    if fresh:
        demo.create(root)
    ws = open_workspace(load_settings(config))
    try:
        for st in poll_once(ws):
            if st.failures:
                raise UserError(f"demo mailbox failed: {st.last_error}")
            print(f"demo mailbox: {st.stored} emails ingested", file=sys.stderr)
        if fresh:
            demo.seed_activity(ws)
        if sys.stdin.isatty() and sys.stdout.isatty() and not args.no_tui:
            run_tui(ws, poll=True)
        else:
            with ws.db.session() as session:
                print_table(iter_tickets(session), now=datetime.now(UTC))
    finally:
        ws.close()
    import shlex

    deskq = shlex.quote(sys.argv[0]) if sys.argv and sys.argv[0].endswith("deskq") else "deskq"
    command = f"{deskq} --config {shlex.quote(str(config))}"
    print(f"\ndemo workspace: {root}\ntry: {command}    (the terminal UI)")
    print(f"     {command} show 1")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every deskq command."""
    parser = argparse.ArgumentParser(
        prog="deskq",
        description="Turn a team's shared mailbox into a work queue. Without a command: "
        "the terminal UI.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $DESKQ_CONFIG, then the platform's "
        "config dir, e.g. ~/.config/deskq/config.toml)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--no-poll",
        action="store_true",
        help="TUI only: do not poll the mailboxes in the background (when 'deskq poll' "
        "runs as a service)",
    )
    parser.set_defaults(func=cmd_tui)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("init", help="write a starter config and create the database")
    p.add_argument("--me", metavar="ADDRESS", help="your address (default: user@host)")
    p.add_argument("--database", metavar="URL", help="database URL for the starter config")
    p.add_argument(
        "--data-dir", metavar="DIR", help="where the starter config puts the database and Maildir"
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing config")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("config", help="config file commands")
    csub = p.add_subparsers(title="config commands", metavar="COMMAND", required=True)
    c = csub.add_parser("check", help="validate and print the effective config, secrets masked")
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("db", help="database commands")
    dsub = p.add_subparsers(title="db commands", metavar="COMMAND", required=True)
    c = dsub.add_parser("upgrade", help="migrate the database to this deskq's schema")
    c.set_defaults(func=cmd_db_upgrade)
    c = dsub.add_parser(
        "copy",
        help="copy the database into another, empty one (e.g. PostgreSQL) and verify it",
    )
    c.add_argument(
        "--to",
        metavar="URL",
        required=True,
        help="target database URL, e.g. postgresql+psycopg://USER@HOST/DB (a password may "
        "come from PGPASSWORD or ~/.pgpass instead of the URL)",
    )
    c.add_argument(
        "--force", action="store_true", help="replace the target's contents if it holds any"
    )
    c.set_defaults(func=cmd_db_copy)

    p = sub.add_parser("list", help="list tickets")
    p.add_argument("--queue", metavar="Q", help="only this queue (its key)")
    p.add_argument("--status", metavar="S", help="only these statuses, comma-separated")
    p.add_argument(
        "--search", metavar="WORDS", help="only tickets whose mail contains all these words"
    )
    p.add_argument("--json", action="store_true", help="a JSON array (see README)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("poll", help="ingest mail from every mailbox until stopped")
    p.add_argument(
        "--once", action="store_true", help="one pass over every mailbox; exit code 1 if any failed"
    )
    p.add_argument(
        "--mailbox", action="append", metavar="NAME", help="only this mailbox (repeatable)"
    )
    p.set_defaults(func=cmd_poll)

    p = sub.add_parser("release", help="release a quarantined ticket into its queue")
    p.add_argument("id", type=int, metavar="ID", help="ticket number")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("demo", help="a throwaway workspace with a demo mailbox")
    p.add_argument("--dir", metavar="DIR", help="where to create it (default: a temp dir)")
    p.add_argument(
        "--no-tui", action="store_true", help="print the queue instead of opening the TUI"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "serve", help="the terminal UI in a web browser (textual-serve; run 'deskq poll' too)"
    )
    p.add_argument("--host", default="localhost", help="address to listen on (default localhost)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.set_defaults(func=cmd_serve)

    from tui import cli_access, cli_reply, cli_report, cli_sla

    cli_reply.add_commands(sub)
    cli_report.add_commands(sub)
    cli_sla.add_commands(sub)
    cli_access.add_commands(sub)

    p = sub.add_parser("show", help="show one ticket")
    p.add_argument("id", type=int, metavar="ID", help="ticket number")
    p.add_argument("--json", action="store_true", help="a JSON object (see README)")
    p.set_defaults(func=cmd_show)
    return parser


def _user_message(exc: BaseException) -> tuple[str, int] | None:
    """The one-paragraph message and exit code for an expected failure, else None."""
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    from store.config import ConfigError
    from store.db import DatabaseError
    from store.secrets import SecretError
    from store.services import ActionError

    if isinstance(exc, UserError):
        return str(exc), exc.code
    if isinstance(exc, ConfigError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, DatabaseError | SecretError | ActionError):
        return str(exc), EXIT_FAILURE
    if isinstance(exc, OperationalError):
        reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
        return (
            f"the database failed: {reason}. Retry; if it persists, check the database "
            "server or file (run with --debug for details).",
            EXIT_FAILURE,
        )
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {str(exc).splitlines()[0]} (run with --debug for details)", 1
    if isinstance(exc, BrokenPipeError):
        return "", EXIT_OK
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deskq`` console script."""
    # Loading the database layer makes a few hundred thousand objects that live as
    # long as the process; with the default thresholds the collector walked them
    # again and again while they were made (50 ms, a sixth of a poller's start).
    # Collections wait until start-up is over: the TUI and the poller then set their
    # own thresholds; other commands are short and keep this one.
    gc.set_threshold(*STARTUP_GC)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        handled = _user_message(exc)
        if handled is None or args.debug:
            raise
        message, code = handled
        if isinstance(exc, BrokenPipeError):
            # stdout went away (deskq list | head): exit quietly, as Unix tools do.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return code
        print(f"deskq: {message}", file=sys.stderr)
        return code
