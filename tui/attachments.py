"""Attachments from the ticket screen: save to a folder, or open with the system opener."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from platformdirs import user_downloads_dir
from textual.screen import Screen

from mail.parse import safe_filename
from store.views import AttachmentView, TicketDetail
from tui.desk import Desk
from tui.dialogs import ChoiceDialog, TextDialog, notice


def unique_path(folder: Path, filename: str, media_type: str = "") -> Path:
    """``folder/filename``, or ``name (2).ext`` and so on if it exists: never overwrite."""
    name = safe_filename(filename, media_type, 1)
    path = folder / name
    stem, suffix = path.stem, path.suffix
    n = 2
    while path.exists():
        path = folder / f"{stem} ({n}){suffix}"
        n += 1
    return path


def save(desk: Desk, attachment: AttachmentView, folder: Path) -> Path:
    """Write the attachment into ``folder`` under a safe, new name."""
    data = desk.attachment_bytes(attachment.sha256)
    folder.mkdir(parents=True, exist_ok=True)
    path = unique_path(folder, attachment.filename, attachment.media_type)
    with open(path, "xb") as out:
        out.write(data)
    return path


def opener_command(path: Path) -> list[str]:
    """The platform's "open with the default application" command."""
    if sys.platform == "darwin":
        return ["open", str(path)]
    if sys.platform.startswith("win"):
        return ["cmd", "/c", "start", "", str(path)]
    return ["xdg-open", str(path)]


def open_with_system(desk: Desk, attachment: AttachmentView) -> Path:
    """Save to a private temporary folder and hand it to the system opener."""
    folder = Path(tempfile.mkdtemp(prefix="deskq-open-"))
    path = save(desk, attachment, folder)
    subprocess.Popen(
        opener_command(path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return path


async def choose(screen: Screen[Any], desk: Desk, detail: TicketDetail) -> None:
    """Pick an attachment, then save or open it."""
    app = screen.app
    found = [a for m in detail.messages for a in m.attachments]
    if not found:
        notice(app, "this ticket has no attachments", "warning")
        return
    choices = [
        (str(i), f"{a.filename} ({a.media_type}, {a.size:,} bytes)") for i, a in enumerate(found)
    ]
    picked = await app.push_screen_wait(ChoiceDialog("Attachment", choices))
    if picked is None:
        return
    attachment = found[int(picked)]
    how = await app.push_screen_wait(
        ChoiceDialog(
            attachment.filename,
            [("save", "save to a folder"), ("open", "open with the system's application")],
        )
    )
    try:
        if how == "open":
            path = await asyncio.to_thread(open_with_system, desk, attachment)
            notice(app, f"opened {path}")
        elif how == "save":
            default = os.environ.get("DESKQ_DOWNLOADS") or user_downloads_dir()
            folder = await app.push_screen_wait(TextDialog("Save into folder", default))
            if folder:
                path = await asyncio.to_thread(save, desk, attachment, Path(folder).expanduser())
                notice(app, f"saved {path}")
    except OSError as exc:
        notice(app, f"could not {how} {attachment.filename}: {exc}", "error", timeout=8)
