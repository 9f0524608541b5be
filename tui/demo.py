"""``deskq demo``: a throwaway workspace with SQLite and a bundled demo mailbox.

The demo mail is delivered into a local Maildir and ingested through the real poller
path, exactly as a team's own mail would be. Outgoing mail goes to an outbox folder.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from mail.demo_mail import QUEUES, generate
from tui.starter import toml_string

DEMO_ME = "alex.provider@corp.example"


def demo_config(root: Path) -> str:
    """The demo workspace's config text."""
    queues = "".join(
        f'\n[[queue]]\nkey = "{key}"\nname = "{name}"\ntag = "{tag}"\naddress = "{address}"\n'
        f"aliases = [{', '.join(chr(34) + a + chr(34) for a in aliases)}]\n"
        for key, (name, tag, address, aliases) in QUEUES.items()
    )
    db = toml_string(str(root / "deskq.db"))
    maildir = toml_string(str(root / "Maildir"))
    return (
        "# deskq demo workspace: throwaway, safe to delete.\n"
        f'me = "{DEMO_ME}"\n\n[database]\nurl = "sqlite:///{db}"\n\n'
        f'[[mailbox]]\nname = "demo"\nsource = "maildir"\npath = "{maildir}"\n'
        'default_queue = "it"\npoll_interval = 5\n' + queues
    )


def create(root: Path, count: int = 200) -> Path:
    """Write the workspace (config, Maildir with the demo mail); returns the config path."""
    maildir = root / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for index, mail in enumerate(generate(count, now=datetime.now(UTC))):
        path = maildir / "new" / f"{int(mail.date.timestamp())}.{index:04d}.demo"
        path.write_bytes(mail.raw)
        stamp = mail.date.timestamp()
        os.utime(path, (stamp, stamp))
    config = root / "config.toml"
    config.write_text(demo_config(root), encoding="utf-8")
    return config
