"""The commented starter config that ``deskq init`` writes."""

from __future__ import annotations

from pathlib import Path

STARTER = """\
# deskq configuration. Every key is described in README.md, section "Configuration".
# Check it with: deskq config check

# You: the provider using this terminal.
me = "{me}"

[database]
# SQLite by default; for a team on several machines use PostgreSQL:
#   url = "postgresql+psycopg://deskq@db.corp.example/deskq"
#   password_env = "DESKQ_DB_PASSWORD"
url = "{url}"

# A local Maildir (fed by your MTA, fetchmail or mbsync): mail dropped into its
# new/ folder becomes tickets.
[[mailbox]]
name = "local"
source = "maildir"
path = "{maildir}"
default_queue = "help"

# A shared IMAP mailbox (password from the environment, a command or the keyring):
# [[mailbox]]
# name = "helpdesk"
# source = "imap"
# host = "imap.corp.example"
# security = "tls"                 # tls | starttls | none (localhost only)
# username = "helpdesk@corp.example"
# password_env = "DESKQ_HELPDESK_PASSWORD"   # or password_command = "pass show helpdesk"
# folder = "INBOX"
# after = "seen"                   # seen | move:FOLDER | none; deskq never deletes mail
# default_queue = "help"

[[queue]]
key = "help"
name = "Help Desk"
tag = "HELP"
address = "help@example.com"
aliases = []
signature = ""
# providers = ["carol@corp.example"]   # only they see this queue (default: every provider)

# How replies leave. Without [sending], replies wait in the outbox.
# [sending]
# method = "smtp"                  # or: method = "command" with command = "msmtp -t"
# host = "smtp.corp.example"
# security = "starttls"
# username = "helpdesk@corp.example"
# password_env = "DESKQ_SMTP_PASSWORD"
"""


def toml_string(value: str) -> str:
    """``value`` escaped for use inside a TOML basic string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def starter_config(me: str, url: str, maildir: Path) -> str:
    """The starter config text for these values."""
    return STARTER.format(
        me=toml_string(me), url=toml_string(url), maildir=toml_string(str(maildir))
    )
