"""Recognising automatic mail, so deskq never answers a machine (RFC 3834 and practice).

An out-of-office answered by an acknowledgement answered by an out-of-office... is
the classic help-desk loop. Anything listed here may open or join a ticket but never
triggers an automatic reply.
"""

from __future__ import annotations

from mail.parse import ParsedMessage

OWN_HEADER = "X-Deskq-Ticket"
_DAEMONS = (
    "mailer-daemon",
    "postmaster",
    "noreply",
    "no-reply",
    "do-not-reply",
    "donotreply",
    "bounce",
    "bounces",
)


def automatic_reasons(p: ParsedMessage) -> list[str]:
    """Why this message must not get an automatic reply (empty: a person wrote it)."""
    reasons = []
    auto = p.header("auto-submitted").split(";")[0].strip().lower()
    if auto and auto != "no":
        reasons.append(f"Auto-Submitted: {auto}")
    precedence = p.header("precedence").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        reasons.append(f"Precedence: {precedence}")
    if p.header("x-auto-response-suppress"):
        reasons.append("X-Auto-Response-Suppress")
    if p.header("x-autoreply") or p.header("x-autorespond"):
        reasons.append("X-Autoreply")
    if p.header("list-id") or p.header("list-unsubscribe"):
        reasons.append("mailing list")
    if "return-path" in p.headers and p.header("return-path").strip() in ("", "<>"):
        reasons.append("empty Return-Path")
    local = p.from_addr.split("@")[0]
    if local in _DAEMONS or local.startswith(("mailer-daemon", "postmaster")):
        reasons.append(f"sender {p.from_addr}")
    if not p.from_addr:
        reasons.append("no sender")
    if p.is_delivery_report or p.header("x-failed-recipients"):
        reasons.append("delivery report")
    if p.header(OWN_HEADER.lower()):
        # Mail from a help desk (ours is recognised by Message-ID before this): never
        # answer it automatically, or two desks acknowledge each other forever.
        reasons.append(f"{OWN_HEADER} (sent by a help desk)")
    return reasons


def is_bounce(p: ParsedMessage) -> bool:
    """A delivery-status or disposition report (or what mailer-daemons send instead)."""
    local = p.from_addr.split("@")[0]
    return (
        p.is_delivery_report
        or bool(p.header("x-failed-recipients"))
        or local in ("mailer-daemon", "postmaster")
    )
