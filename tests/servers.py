"""Real throwaway servers for tests: a PostgreSQL cluster and a private Dovecot.

Plain helpers (no pytest here) so that conftest can wrap them in fixtures.

Where the instances live: each instance gets a fresh short directory from
``tempfile.mkdtemp`` in the system temp dir, mode 0755, and ``workdir`` only receives
a symlink to it (``workdir/postgres`` or ``workdir/dovecot``) so that logs are easy to
find. Reasons: pytest's tmp dirs are 0700 and owned by root, which the ``postgres``,
``dovecot`` and ``vmail`` users cannot traverse, and they are deep, while Unix socket
paths are limited to 107 bytes.
"""

from __future__ import annotations

import contextlib
import getpass
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

DOVECOT_BIN = Path("/usr/sbin/dovecot")
DH_FILE = Path("/usr/share/dovecot/dh.pem")
HOST = "127.0.0.1"


def _is_root() -> bool:
    return os.geteuid() == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _make_instance_dir(workdir: Path, prefix: str, link_name: str) -> Path:
    """Create a short 0755 dir in the system temp dir and link it from ``workdir``."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir / link_name
    with contextlib.suppress(OSError):
        link.unlink(missing_ok=True)
        link.symlink_to(path, target_is_directory=True)
    return path


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


# --------------------------------------------------------------------------- PostgreSQL


def find_postgres_bin() -> Path | None:
    """Return the newest PostgreSQL server bin dir (with initdb and pg_ctl), or None."""

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def postgres_unavailable_reason() -> str | None:
    """Return None if a throwaway cluster can be started here, else why not and how to fix."""
    if find_postgres_bin() is None:
        return (
            "PostgreSQL server binaries not found:"
            " apt-get install postgresql (Debian) to run these tests"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed: pip install 'psycopg[binary]' to run these tests"
    if _is_root():
        if not _user_exists("postgres"):
            return "running as root but OS user 'postgres' is missing: useradd --system postgres"
        if shutil.which("runuser") is None:
            return "running as root but runuser(1) is missing: apt-get install util-linux"
    return None


class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth, superuser ``postgres``)."""

    def __init__(self, bindir: Path, directory: Path, port: int) -> None:
        self.bindir = bindir
        self.directory = directory
        self.port = port
        self.host = HOST
        self.log_path = directory / "log"

    @staticmethod
    def _cmd(args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if _is_root() else args

    @classmethod
    def start(cls, workdir: Path) -> PostgresCluster:
        """Run initdb and pg_ctl start on a free port; see the module doc for where it lives."""
        reason = postgres_unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        bindir = find_postgres_bin()
        assert bindir is not None
        directory = _make_instance_dir(Path(workdir), "deskq-pg-", "postgres")
        if _is_root():
            pw = pwd.getpwnam("postgres")
            os.chown(directory, pw.pw_uid, pw.pw_gid)
        data = directory / "data"
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        initdb += ["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
        proc = subprocess.run(cls._cmd(initdb), cwd=directory, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            raise RuntimeError(f"initdb failed:\n{proc.stdout}{proc.stderr}")
        last = ""
        for _ in range(5):  # a free port can be taken between probe and bind: retry
            port = _free_port()
            opts = (
                f"-p {port} -k {directory} -c listen_addresses={HOST} -c fsync=off"
                " -c max_connections=200"
            )
            cmd = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(directory / "log")]
            proc = subprocess.run(
                cls._cmd([*cmd, "-w", "-o", opts, "start"]),
                cwd=directory, capture_output=True, text=True,
            )  # fmt: skip
            if proc.returncode == 0:
                return cls(bindir, directory, port)
            last = f"{proc.stdout}{proc.stderr}\n{_tail(directory / 'log')}"
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed:\n{last}")

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL for ``dbname`` on this cluster."""
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{dbname}"

    def _conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user=postgres dbname={dbname}"

    def create_database(self, name: str, template: str | None = None) -> None:
        """CREATE DATABASE ``name`` (optionally from ``template``)."""
        import psycopg
        from psycopg import sql

        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        with psycopg.connect(self._conninfo(), autocommit=True) as conn:
            conn.execute(query)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS ``name``, disconnecting any remaining sessions."""
        import psycopg
        from psycopg import sql

        query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with psycopg.connect(self._conninfo(), autocommit=True) as conn:
            conn.execute(query)

    def stop(self) -> None:
        """Stop the server (immediate mode) and delete the cluster directory."""
        if self.directory.exists():
            pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.directory / "data")]
            subprocess.run(
                self._cmd([*pg_ctl, "-m", "immediate", "-w", "stop"]), cwd="/", capture_output=True
            )
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ------------------------------------------------------------------------------ Dovecot


def dovecot_unavailable_reason() -> str | None:
    """Return None if a private Dovecot can be started here, else why not and how to fix."""
    if not DOVECOT_BIN.is_file():
        return "Dovecot not found: apt-get install dovecot-imapd to run these tests"
    if shutil.which("openssl") is None:
        return "openssl not found: apt-get install openssl to run these tests"
    if _is_root() and not _user_exists("vmail") and shutil.which("useradd") is None:
        return "running as root, OS user 'vmail' is missing and useradd is not available"
    return None


def _ensure_vmail() -> tuple[int, int]:
    if not _user_exists("vmail"):
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "vmail"],
            check=True, capture_output=True,
        )  # fmt: skip
    pw = pwd.getpwnam("vmail")
    return pw.pw_uid, pw.pw_gid


def _dovecot_conf(d: Path, imap_port: int, imaps_port: int) -> str:
    if _is_root():
        uid, gid = _ensure_vmail()
        owner = ""
    else:
        uid, gid = os.getuid(), os.getgid()
        me, group = getpass.getuser(), grp.getgrgid(gid).gr_name
        owner = (
            f"default_internal_user = {me}\ndefault_internal_group = {group}\n"
            f"default_login_user = {me}\n"
            "service ipc {\n  chroot =\n}\n"
        )
    dh = f"ssl_dh = <{DH_FILE}\n" if DH_FILE.is_file() else ""
    return f"""\
instance_name = deskq-{os.getpid()}-{uuid.uuid4().hex[:8]}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
{owner}protocols = imap
listen = {HOST}
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
{dh}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {d}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%n
}}
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
}}
protocol imap {{
  mail_max_userip_connections = 200
}}
service imap-login {{
  {"" if _is_root() else "chroot ="}
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  {"" if _is_root() else "chroot ="}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


class Dovecot:
    """A private Dovecot IMAP/IMAPS server on 127.0.0.1 with a pool of passwd-file users."""

    host = HOST

    def __init__(self, directory: Path, users: list[tuple[str, str]]) -> None:
        self.directory = directory
        self.users = users
        self.imap_port = 0
        self.imaps_port = 0
        self.ca_file = directory / "cert.pem"
        self.log_path = directory / "dovecot.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._next_user = 0
        self._lock = threading.Lock()

    @classmethod
    def start(cls, workdir: Path, users: list[tuple[str, str]] | int = 20) -> Dovecot:
        """Write config, cert and users, launch Dovecot, and wait until both ports accept."""
        reason = dovecot_unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        if isinstance(users, int):
            users = [(f"user{i:02d}", "secret") for i in range(1, users + 1)]
        d = _make_instance_dir(Path(workdir), "deskq-dovecot-", "dovecot")
        self = cls(d, list(users))
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "30", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        (d / "users").write_text("".join(f"{n}:{{PLAIN}}{p}::::::\n" for n, p in self.users))
        (d / "mail").mkdir()
        if _is_root():
            uid, gid = _ensure_vmail()
            os.chown(d / "mail", uid, gid)
        for attempt in range(5):  # a probed free port can be taken before Dovecot binds it
            self.imap_port = self.imaps_port = _free_port()
            while self.imaps_port == self.imap_port:
                self.imaps_port = _free_port()
            self.log_path.unlink(missing_ok=True)
            try:
                self._launch()
                return self
            except RuntimeError:
                if attempt == 4 or "Address already in use" not in _tail(self.log_path, 200):
                    self.close()
                    raise
        raise AssertionError("unreachable")

    def _launch(self, timeout: float = 10.0) -> None:
        conf = self.directory / "dovecot.conf"
        conf.write_text(_dovecot_conf(self.directory, self.imap_port, self.imaps_port))
        stderr = self.directory / "dovecot.stderr"
        with stderr.open("ab") as err:
            self.proc = subprocess.Popen(
                [str(DOVECOT_BIN), "-F", "-c", str(conf)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        pending = [self.imap_port, self.imaps_port]
        while pending:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = "exited" if self.proc.poll() is not None else f"not ready in {timeout}s"
                self.stop()
                raise RuntimeError(
                    f"dovecot {why}:\n{_tail(stderr)}\n--- {self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                self._greeting(pending[0])
                pending.pop(0)
            except OSError:
                time.sleep(0.01)

    def _greeting(self, port: int) -> None:
        """Read the IMAP greeting (over verified TLS on the IMAPS port), or raise OSError.

        A bare connect is not enough: another process may hold the port we probed.
        """
        with socket.create_connection((HOST, port), timeout=1) as sock:
            if port == self.imaps_port:
                context = ssl.create_default_context(cafile=str(self.ca_file))
                with context.wrap_socket(sock, server_hostname="localhost") as tls:
                    greeting = tls.recv(100)
            else:
                greeting = sock.recv(100)
        if not greeting.startswith(b"* OK"):
            raise ConnectionError(f"unexpected greeting on port {port}: {greeting!r}")

    def _signal(self, sig: signal.Signals, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self._wait_port_closed(timeout)

    def _wait_port_closed(self, timeout: float) -> None:
        """Until nothing accepts on the IMAP port (children outlive the master briefly)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.imap_port), timeout=0.2):
                    pass
            except OSError:
                return
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM the whole process group and wait; the instance dir (mail) is kept."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole process group, as in a crash; the instance dir is kept."""
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        """Start again (stopping first if running) on the same ports and mail dir."""
        self.stop()
        self._launch()

    def close(self) -> None:
        """Stop and delete the instance directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def take_user(self) -> tuple[str, str]:
        """Hand out a pool user not handed out before (so its mailbox is empty)."""
        with self._lock:
            if self._next_user >= len(self.users):
                raise RuntimeError(f"Dovecot user pool exhausted ({len(self.users)} users)")
            self._next_user += 1
            return self.users[self._next_user - 1]

    def maildir(self, user: str) -> Path:
        """Path of ``user``'s Maildir on disk (exists after the first login)."""
        return self.directory / "mail" / user / "Maildir"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
