"""Making hostile email text harmless for a terminal.

Email headers and bodies may carry ANSI/OSC escape sequences (which can retitle the
terminal, fake output or worse), C1 controls, and bidirectional overrides (which make
``evil.exe\u202egpj.txt`` display as something else). Everything shown on a terminal
goes through :func:`for_terminal` first; Rich markup is never applied to it either.
"""

from __future__ import annotations

import re

# ESC-introduced sequences: CSI ... final byte, OSC/DCS/APC/PM/SOS ... terminator,
# and two-byte escapes.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b[\]PX^_].*?(?:\x07|\x1b\\|$)"  # OSC, DCS, SOS, PM, APC
    r"|\x1b[@-Z\\-_]"  # two-byte escapes (Fe)
    r"|\x1b",
    re.DOTALL,
)
# C0 (except tab and newline), DEL, C1, bidi embeddings/overrides/isolates, and
# other invisible format characters that reorder or hide text.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u206a-\u206f\ufeff]"
)


def for_terminal(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with escape sequences and dangerous invisible characters removed.

    Carriage returns are dropped (CRLF becomes LF; a lone CR could overwrite a line).
    With ``keep_newlines=False`` line breaks and tabs become spaces (for one-line cells).
    """
    text = _ESCAPES.sub("", text.replace("\r\n", "\n"))
    text = _INVISIBLE.sub("", text)
    if not keep_newlines:
        text = re.sub(r"[\n\t]+", " ", text)
    return text


def one_line(text: str, width: int) -> str:
    """A sanitised single line cut to ``width`` characters with an ellipsis."""
    line = for_terminal(text, keep_newlines=False).strip()
    if width <= 0:
        return ""
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"
