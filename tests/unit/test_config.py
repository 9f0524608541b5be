"""The config file (store/config.py), password sources (store/secrets.py) and terminal
sanitising (tui/safe_text.py): what parses, and what every bad input tells the user."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store.config import (
    CONFIG_ENV,
    ConfigError,
    DatabaseSettings,
    MailboxSettings,
    QueueSettings,
    SendingSettings,
    Settings,
    default_config_path,
    load_settings,
    parse_settings,
    resolve_config_path,
)
from store.secrets import SecretError, resolve_password, run_secret_command
from tui.safe_text import for_terminal, one_line
from tui.starter import starter_config

CONFIG_PATH = "/etc/deskq/team.toml"

EXAMPLE = """\
me = "alice@corp.example"
[database]
url = "sqlite:///~/.local/share/deskq/deskq.db"
[[mailbox]]
name = "helpdesk"
source = "imap"
host = "imap.corp.example"
port = 993
security = "tls"
ca_file = "/path/ca.pem"
username = "helpdesk@corp.example"
password_env = "DESKQ_HELPDESK_PASSWORD"
folder = "INBOX"
after = "seen"
default_queue = "it"
[[queue]]
key = "it"
name = "IT Help"
tag = "IT"
address = "it-help@corp.example"
aliases = ["it-help@corp.example", "it@corp.example"]
[sending]
method = "smtp"
host = "smtp.corp.example"
port = 587
security = "starttls"
username = "helpdesk@corp.example"
password_env = "DESKQ_SMTP_PASSWORD"
"""

QUEUE_IT = """
[[queue]]
key = "it"
name = "IT Help"
tag = "IT"
address = "it-help@corp.example"
aliases = ["it@corp.example"]
"""

QUEUE_HR = """
[[queue]]
key = "hr"
name = "People"
tag = "HR"
address = "hr@corp.example"
"""

IMAP_FIELDS = """
name = "helpdesk"
source = "imap"
host = "imap.corp.example"
username = "helpdesk@corp.example"
"""


def imap(extra: str = 'password_env = "DESKQ_PW"', fields: str = IMAP_FIELDS) -> str:
    """An [[mailbox]] table for IMAP with ``extra`` lines, after the IT queue."""
    return QUEUE_IT + "\n[[mailbox]]" + fields + extra + "\n"


def config_error(text: str, path: str = CONFIG_PATH) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, path)
    return info.value


def assert_names(err: ConfigError, key: str, *fragments: str, path: str = CONFIG_PATH) -> None:
    """The message names the file, the key and carries a fix (plus any ``fragments``)."""
    message = str(err)
    assert err.key == key
    assert message.startswith(f"config error in {path}: ")
    assert f"key '{key}'" in message
    assert " Fix: " in message and err.fix, message
    for fragment in fragments:
        assert fragment in message, message


# --------------------------------------------------------------------------- valid files


def test_starter_config_parses(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    text = starter_config("bob@host.example", f"sqlite:///{tmp_path / 'deskq.db'}", maildir)
    settings = parse_settings(text, tmp_path / "config.toml")
    assert settings.me == "bob@host.example"
    assert settings.database.url == f"sqlite:///{tmp_path / 'deskq.db'}"
    (mailbox,) = settings.mailbox
    assert (mailbox.name, mailbox.source, mailbox.path) == ("local", "maildir", str(maildir))
    assert mailbox.default_queue == "help"
    (queue,) = settings.queue
    assert (queue.key, queue.tag, queue.address, queue.aliases) == (
        "help",
        "HELP",
        "help@example.com",
        (),
    )
    assert settings.sending is None


def test_starter_config_escapes_quotes_and_backslashes() -> None:
    maildir = Path('C:\\Users\\o"brien\\Maildir')
    url = 'sqlite:///C:\\Users\\o"brien\\deskq.db'
    settings = parse_settings(starter_config("o.brien@host.example", url, maildir))
    assert settings.database.url == url
    assert settings.mailbox[0].path == str(maildir)


def test_full_example_parses_into_typed_values(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    settings = load_settings(path)
    assert isinstance(settings, Settings)
    assert settings.path == path
    assert settings.me == "alice@corp.example"
    assert settings.database == DatabaseSettings(url="sqlite:///~/.local/share/deskq/deskq.db")
    assert settings.database.busy_timeout_ms == 10_000
    assert settings.mailbox == (
        MailboxSettings(
            name="helpdesk",
            source="imap",
            host="imap.corp.example",
            port=993,
            security="tls",
            ca_file="/path/ca.pem",
            username="helpdesk@corp.example",
            password_env="DESKQ_HELPDESK_PASSWORD",
            folder="INBOX",
            after="seen",
            default_queue="it",
        ),
    )
    mailbox = settings.mailbox[0]
    assert type(mailbox.port) is int and mailbox.effective_port == 993
    assert (mailbox.auth, mailbox.allow_insecure, mailbox.poll_interval) == ("password", False, 60)
    (queue,) = settings.queue
    assert queue == QueueSettings(
        key="it",
        name="IT Help",
        tag="IT",
        address="it-help@corp.example",
        aliases=("it-help@corp.example", "it@corp.example"),
    )
    assert queue.all_aliases == ("it-help@corp.example", "it@corp.example")
    assert settings.queue_by_key("it") is queue
    assert settings.sending == SendingSettings(
        method="smtp",
        host="smtp.corp.example",
        port=587,
        security="starttls",
        username="helpdesk@corp.example",
        password_env="DESKQ_SMTP_PASSWORD",
    )
    assert settings.sending.effective_port == 587


def test_empty_file_gives_defaults() -> None:
    settings = parse_settings("", CONFIG_PATH)
    assert settings.me == ""
    assert settings.database.url.startswith("sqlite:///")
    assert settings.database.url.endswith("deskq.db")
    assert settings.mailbox == () and settings.queue == () and settings.sending is None
    assert settings.path == Path(CONFIG_PATH)


def test_default_ports_follow_security() -> None:
    settings = parse_settings(
        imap('password_env = "X"\nsecurity = "starttls"')
        + '[sending]\nhost = "smtp.corp.example"\nsecurity = "tls"\n'
    )
    assert settings.mailbox[0].effective_port == 143
    assert settings.sending is not None and settings.sending.effective_port == 465


# --------------------------------------------------------------------------- bad input


def test_unknown_key_suggests_the_close_one() -> None:
    err = config_error(imap('password_env = "X"\nprot = 993'))
    assert_names(err, "mailbox[0].prot", "unknown key", "did you mean 'port'?")


def test_unknown_top_level_key_suggests_the_close_one() -> None:
    err = config_error('databse = "x"\n')
    assert_names(err, "databse", "did you mean 'database'?")


def test_unknown_key_without_a_close_match_says_remove_it() -> None:
    err = config_error("[database]\nzzzzqqq = 1\n")
    assert_names(err, "database.zzzzqqq", "remove it.", "Known keys here: url,")


def test_string_port_is_a_type_error() -> None:
    err = config_error(imap('password_env = "X"\nport = "993"'))
    assert_names(err, "mailbox[0].port", "expected an integer", "'993' (a string)")
    assert "set mailbox[0].port to an integer" in err.fix


def test_a_batch_bytes_limit_below_one_mebibyte_is_refused() -> None:
    err = config_error("[ingest]\nbatch_bytes = 4096\n")
    assert_names(err, "ingest.batch_bytes", "below 1 MiB", "batch_bytes = 33554432")
    assert parse_settings("[ingest]\nbatch_bytes = 1048576\n").ingest.batch_bytes == 1 << 20


def test_bool_is_not_an_integer() -> None:
    err = config_error("[database]\nbusy_timeout_ms = true\n")
    assert_names(err, "database.busy_timeout_ms", "expected an integer", "(a boolean)")


def test_integer_is_not_a_bool() -> None:
    err = config_error(imap('password_env = "X"\nallow_insecure = 1'))
    assert_names(err, "mailbox[0].allow_insecure", "expected true or false")


def test_url_must_be_a_string() -> None:
    err = config_error("[database]\nurl = 5\n")
    assert_names(err, "database.url", "expected a string", "5 (an integer)")


def test_aliases_must_be_an_array_of_strings() -> None:
    err = config_error(QUEUE_HR + QUEUE_IT.replace('["it@corp.example"]', '"it@corp.example"'))
    assert_names(err, "queue[1].aliases", "expected an array", "'it@corp.example' (a string)")


def test_array_type_is_named_in_plain_english() -> None:
    err = config_error(QUEUE_IT.replace('["it@corp.example"]', '"it@corp.example"'))
    assert "expected an array of strings," in str(err)


def test_alias_items_must_be_strings() -> None:
    err = config_error(QUEUE_IT.replace('["it@corp.example"]', "[42]"))
    assert_names(err, "queue[0].aliases[0]", "expected a string")


def test_literal_values_are_listed() -> None:
    err = config_error(imap('password_env = "X"\nsecurity = "ssl"'))
    assert_names(err, "mailbox[0].security", 'one of "tls", "starttls", "none"')


def test_section_must_be_a_table() -> None:
    err = config_error('database = "sqlite:///x.db"\n')
    assert_names(err, "database", "expected a table")


def test_mailbox_must_be_an_array_of_tables() -> None:
    err = config_error(QUEUE_IT + '[mailbox]\nname = "x"\n')
    assert_names(err, "mailbox", "expected an array of tables")


def test_missing_required_key() -> None:
    err = config_error(QUEUE_IT + QUEUE_HR.replace('tag = "HR"\n', ""))
    assert_names(err, "queue[1].tag", "is required but missing", "add tag = ...")


def test_invalid_toml_names_the_file_and_the_line() -> None:
    err = config_error('me = "alice@corp.example"\n[database\nurl = "x"\n')
    assert err.key == ""
    message = str(err)
    assert message.startswith(f"config error in {CONFIG_PATH}: the file is not valid TOML")
    assert "line 2" in message
    assert "Fix: correct the syntax" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "config.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(f"config error in {path}: ")
    assert "does not exist" in message
    assert "deskq init" in message and CONFIG_ENV in message


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_bytes(b'me = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "config.toml")
    assert str(tmp_path / "config.toml") in str(info.value)
    assert "UTF-8" in str(info.value)


def test_duplicate_queue_key() -> None:
    err = config_error(QUEUE_IT + QUEUE_IT.replace("it-help@", "it2@").replace("it@", "it3@"))
    assert_names(err, "queue[1].key", "'it' is used twice")


def test_alias_shared_by_two_queues() -> None:
    err = config_error(QUEUE_IT + QUEUE_HR + 'aliases = ["IT@corp.example"]\n')
    assert_names(err, "queue[1].aliases", "it@corp.example already belongs to queue 'it'")


def test_queue_address_that_is_another_queues_alias() -> None:
    err = config_error(QUEUE_IT + QUEUE_HR.replace("hr@corp.example", "it@corp.example"))
    assert_names(err, "queue[1].aliases", "already belongs to queue 'it'")


def test_bad_queue_key_and_tag() -> None:
    assert_names(config_error(QUEUE_IT.replace('key = "it"', 'key = "I T"')), "queue[0].key")
    assert_names(config_error(QUEUE_IT.replace('tag = "IT"', 'tag = "I T"')), "queue[0].tag")


def test_default_queue_naming_no_queue() -> None:
    err = config_error(QUEUE_HR + imap('password_env = "X"\ndefault_queue = "itt"'))
    assert_names(err, "mailbox[0].default_queue", "no queue has key 'itt'", "use one of: hr, it.")


def test_mailbox_without_any_queue() -> None:
    err = config_error('[[mailbox]]\nname = "m"\nsource = "maildir"\npath = "/m"\n')
    assert_names(err, "mailbox[0]", "at least one [[queue]]")


@pytest.mark.parametrize("after", ["delete", "expunge", "move:", ""])
def test_after_never_deletes(after: str) -> None:
    err = config_error(imap(f'password_env = "X"\nafter = "{after}"'))
    assert_names(err, "mailbox[0].after", "seen, none or move:FOLDER", "never deletes")


@pytest.mark.parametrize("after", ["seen", "none", "move:Processed"])
def test_after_accepts(after: str) -> None:
    assert parse_settings(imap(f'password_env = "X"\nafter = "{after}"')).mailbox[0].after == after


def test_security_none_to_a_remote_host_is_refused() -> None:
    err = config_error(imap('password_env = "X"\nsecurity = "none"'))
    assert_names(err, "mailbox[0].security", "'imap.corp.example'", "allow_insecure = true")


def test_security_none_to_a_remote_host_with_allow_insecure() -> None:
    settings = parse_settings(imap('password_env = "X"\nsecurity = "none"\nallow_insecure = true'))
    assert settings.mailbox[0].security == "none"
    assert settings.mailbox[0].effective_port == 143


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1"])
def test_security_none_to_localhost_is_fine(host: str) -> None:
    fields = IMAP_FIELDS.replace("imap.corp.example", host)
    settings = parse_settings(imap('password_env = "X"\nsecurity = "none"', fields=fields))
    assert settings.mailbox[0].host == host


def test_sending_security_none_to_a_remote_host_is_refused() -> None:
    err = config_error('[sending]\nhost = "smtp.corp.example"\nsecurity = "none"\n')
    assert_names(err, "sending.security", "sending.allow_insecure = true")
    ok = parse_settings(
        '[sending]\nhost = "smtp.corp.example"\nsecurity = "none"\nallow_insecure = true\n'
    )
    assert ok.sending is not None and ok.sending.effective_port == 25
    local = parse_settings('[sending]\nsecurity = "none"\n')
    assert local.sending is not None and local.sending.host == "localhost"


def test_sending_command_needs_a_command() -> None:
    assert_names(config_error('[sending]\nmethod = "command"\n'), "sending.command", "msmtp")


def test_sending_folder_needs_a_folder() -> None:
    assert_names(config_error('[sending]\nmethod = "folder"\n'), "sending.folder", "folder =")


def test_sent_copy_needs_an_imap_mailbox() -> None:
    err = config_error('[sending]\nsecurity = "none"\nsent_mailbox = "nope"\n')
    assert_names(err, "sending.sent_mailbox", "'nope'", "IMAP [[mailbox]]")


def test_two_password_sources() -> None:
    err = config_error(imap('password_env = "X"\npassword_command = "pass show helpdesk"'))
    assert_names(
        err, "mailbox[0].password_command", "conflicts with mailbox[0].password_env", "exactly one"
    )
    err = config_error('[database]\npassword_env = "X"\npassword_command = "y"\n')
    assert_names(err, "database.password_command", "conflicts with database.password_env")


def test_imap_without_password_source() -> None:
    err = config_error(imap(""))
    assert_names(err, "mailbox[0].password_env", "no password source", "password_keyring")


def test_imap_needs_host_and_username() -> None:
    fields = IMAP_FIELDS.replace('host = "imap.corp.example"\n', "")
    assert_names(config_error(imap(fields=fields)), "mailbox[0].host", 'add host = "...".')


def test_xoauth2_without_token_command() -> None:
    err = config_error(imap('auth = "xoauth2"'))
    assert_names(err, "mailbox[0].token_command", "xoauth2 needs a token command")
    ok = parse_settings(imap('auth = "xoauth2"\ntoken_command = "oauth2-token helpdesk"'))
    assert ok.mailbox[0].token_command == "oauth2-token helpdesk"


def test_maildir_without_path() -> None:
    err = config_error(QUEUE_IT + '[[mailbox]]\nname = "local"\nsource = "maildir"\n')
    assert_names(err, "mailbox[0].path", "a maildir source needs a path")


def test_duplicate_mailbox_name() -> None:
    mailbox = '[[mailbox]]\nname = "m"\nsource = "maildir"\npath = "/m"\n'
    assert_names(config_error(QUEUE_IT + mailbox + mailbox), "mailbox[1].name", "used twice")


@pytest.mark.parametrize(
    "me", ["alice", "Alice <alice@corp.example>", "alice@@corp.example", "a b@corp.example"]
)
def test_bad_me_address(me: str) -> None:
    err = config_error(f'me = "{me}"\n')
    assert_names(err, "me", "expected an email address", repr(me))


def test_bad_alias_address() -> None:
    err = config_error(QUEUE_IT.replace('["it@corp.example"]', '["it@corp.example", "oops"]'))
    assert_names(err, "queue[0].aliases[1]", "'oops'")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[database]\nbusy_timeout_ms = -1\n", "database.busy_timeout_ms"),
        (imap('password_env = "X"\npoll_interval = 0'), "mailbox[0].poll_interval"),
    ],
)
def test_out_of_range_numbers(text: str, key: str) -> None:
    assert_names(config_error(text), key)


# --------------------------------------------------------------------------- config path


def test_explicit_path_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "env.toml"))
    assert resolve_config_path(tmp_path / "explicit.toml") == tmp_path / "explicit.toml"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_config_path("~/x.toml") == tmp_path / "x.toml"


def test_env_path_beats_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "env.toml"))
    assert resolve_config_path(None) == tmp_path / "env.toml"
    assert resolve_config_path("") == tmp_path / "env.toml"


def test_platform_default_last(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_config_path() == default_config_path()
    if sys.platform.startswith("linux"):
        assert resolve_config_path() == tmp_path / "xdg" / "deskq" / "config.toml"
    monkeypatch.setenv(CONFIG_ENV, "")
    assert resolve_config_path() == default_config_path()


# --------------------------------------------------------------------------- secrets


def test_password_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESKQ_TEST_PW", "hunter2")
    source = DatabaseSettings(url="sqlite://", password_env="DESKQ_TEST_PW")
    assert resolve_password(source, "[database]") == "hunter2"


@pytest.mark.parametrize("value", [None, ""])
def test_password_env_unset(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("DESKQ_TEST_PW", raising=False)
    else:
        monkeypatch.setenv("DESKQ_TEST_PW", value)
    source = DatabaseSettings(url="sqlite://", password_env="DESKQ_TEST_PW")
    with pytest.raises(SecretError) as info:
        resolve_password(source, "mailbox 'helpdesk'")
    message = str(info.value)
    assert message.startswith("mailbox 'helpdesk': ")
    assert "DESKQ_TEST_PW" in message and "not set" in message


def test_password_from_command_is_its_first_line() -> None:
    source = DatabaseSettings(url="sqlite://", password_command="printf 's3cret\\nsecond'")
    assert resolve_password(source, "[database]") == "s3cret"


def test_failing_password_command_never_shows_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # The secret reaches stdout only, never the command line itself.
    monkeypatch.setenv("DESKQ_TEST_SECRET", "s3cret")
    command = "printf '%s\\n' \"$DESKQ_TEST_SECRET\"; echo 'vault is sealed' >&2; exit 3"
    source = DatabaseSettings(url="sqlite://", password_command=command)
    with pytest.raises(SecretError) as info:
        resolve_password(source, "[database]")
    message = str(info.value)
    assert message.startswith("[database]: command failed with exit code 3")
    assert "vault is sealed" in message
    assert "s3cret" not in message


def test_password_command_printing_nothing() -> None:
    source = DatabaseSettings(url="sqlite://", password_command="true")
    with pytest.raises(SecretError, match="printed nothing"):
        resolve_password(source, "[database]")


def test_password_command_timeout() -> None:
    with pytest.raises(SecretError, match="timed out"):
        run_secret_command("sleep 5", "[database]", timeout=0.2)


def test_no_password_source_is_none() -> None:
    assert resolve_password(DatabaseSettings(url="sqlite://"), "[database]") is None
    mailbox = MailboxSettings(name="m", source="maildir", path="/m")
    assert resolve_password(mailbox, "mailbox 'm'", username="x") is None


# --------------------------------------------------------------------------- safe text

DANGEROUS = (
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"  # the ranges named in the docs
)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;pwned\x07title", "title"),
        ("\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b[2J\x1b[Hclear", "clear"),
        ("a\x9bb", "ab"),
        ("a\x85b\x90c", "abc"),
        ("evil\u202egpj.exe", "evilgpj.exe"),
        ("\u2066iso\u2069late", "isolate"),
        ("bell\x07 and del\x7f", "bell and del"),
        ("line1\r\nline2", "line1\nline2"),
        ("over\rwrite", "overwrite"),
        ("lone\x1b", "lone"),
    ],
)
def test_for_terminal_strips(raw: str, shown: str) -> None:
    assert for_terminal(raw) == shown


def test_for_terminal_keeps_ordinary_text() -> None:
    text = "Grüße, café é 日本語 🎉👍🏽\n\tindented\n[bold red]markup[/] stays literal"
    assert for_terminal(text) == text


def test_for_terminal_one_line_mode() -> None:
    assert for_terminal("a\n\n\tb\r\nc", keep_newlines=False) == "a b c"


def test_one_line() -> None:
    assert one_line("short", 10) == "short"
    assert one_line("exactly10!", 10) == "exactly10!"
    cut = one_line("a subject that is far too long", 10)
    assert cut == "a subject…" and len(cut) == 10
    assert one_line("  two\nlines\x1b[1m  ", 20) == "two lines"
    assert one_line("日本語のテキスト", 4) == "日本語…"
    assert one_line("anything", 0) == ""
    assert one_line("anything", 1) == "…"


_NASTY = st.sampled_from(
    [
        *("\x1b", "[", "]", "\\", ";", "0", "\x07", "\x9b", "\x9c", "\x9d", "\r", "\n", "\t"),
        *("\u202e", "\u2066", "\x00", "\x7f", "P", "m", "é", "日"),
    ]
)
_TEXT = st.text(alphabet=st.one_of(st.characters(), _NASTY), max_size=60)


@given(_TEXT)
def test_for_terminal_never_lets_controls_through(text: str) -> None:
    out = for_terminal(text)
    assert not re.search(DANGEROUS, out), repr(out)
    assert for_terminal(out) == out
    flat = for_terminal(text, keep_newlines=False)
    assert not re.search(DANGEROUS, flat) and "\n" not in flat and "\t" not in flat


@given(_TEXT, st.integers(min_value=1, max_value=40))
def test_one_line_fits(text: str, width: int) -> None:
    out = one_line(text, width)
    assert len(out) <= width
    assert "\n" not in out and not re.search(DANGEROUS, out)
