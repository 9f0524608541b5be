"""Quoted history in a message body: found so it can be folded away (and quoted in replies).

Recognises ``>`` quoting, the "On ... wrote:" line of Gmail, Thunderbird and Apple Mail
with everything after it, and Outlook's "-----Original Message-----" or ``From:``/
``Sent:`` header block with everything after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WROTE = re.compile(
    r"^\s*(On\b.{0,200}\bwrote:|Am\b.{0,200}\bschrieb\b.*:|Le\b.{0,200}\ba écrit\s*:)\s*$", re.I
)
_OUTLOOK = re.compile(
    r"^\s*(-{2,}\s*(Original Message|Ursprüngliche Nachricht|Message d'origine)\s*-{2,}"
    r"|_{10,})\s*$",
    re.I,
)
_OUTLOOK_FROM = re.compile(r"^\s*\**(From|Von|De)\s*:\**\s+\S")
_OUTLOOK_NEXT = re.compile(r"^\s*\**(Sent|Gesendet|Envoyé|Date|To|An|À)\s*:", re.I)


@dataclass(frozen=True)
class Block:
    """A run of lines: the message's own text, or quoted history."""

    quoted: bool
    lines: tuple[str, ...]


def _history_start(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        if _WROTE.match(line) or _OUTLOOK.match(line):
            return i
        if _OUTLOOK_FROM.match(line) and i + 1 < len(lines) and _OUTLOOK_NEXT.match(lines[i + 1]):
            return i
    return None


def split_quotes(text: str) -> list[Block]:
    """The body as blocks of own text and quoted history, in order."""
    lines = text.split("\n")
    start = _history_start(lines)
    tail: list[str] = []
    attribution = -1
    if start is not None:
        rest = lines[start + 1 :]
        if _WROTE.match(lines[start]) and any(x.lstrip().startswith(">") for x in rest):
            # ">"-quoted history: answers may be interleaved, so go line by line.
            attribution = start
        else:
            lines, tail = lines[:start], lines[start:]
    blocks: list[Block] = []
    for index, line in enumerate(lines):
        quoted = index == attribution or line.lstrip().startswith(">")
        if blocks and blocks[-1].quoted == quoted:
            blocks[-1] = Block(quoted, (*blocks[-1].lines, line))
        else:
            blocks.append(Block(quoted, (line,)))
    if tail:
        blocks.append(Block(True, tuple(tail)))
    return blocks


def own_text(text: str) -> str:
    """The message without its quoted history."""
    return "\n".join(line for b in split_quotes(text) if not b.quoted for line in b.lines).strip()
