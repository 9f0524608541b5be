"""The standard library's email parser, without a regular expression compiled per message.

``email.feedparser`` compiles one regular expression for every multipart boundary it
meets. Every email has its own boundary, so ``re``'s cache never hits, and compiling
(pure Python in ``re._parser`` and ``re._compiler``) costs about a third of parsing a
multipart email. deskq parses with a private copy of that module whose ``re`` knows
the one pattern the parser builds for boundaries and answers it with string methods
(:class:`BoundaryMatcher`, same results as the expression; tests compare them on
generated lines and on the corpus). Every other pattern goes to the real ``re``;
the standard module itself is left untouched for the rest of the process.

When the private copy cannot be made (no source file for the standard module), the
standard parser is used as it is.
"""

from __future__ import annotations

import email.feedparser
import importlib.util
import logging
import re
from email import policy as email_policy
from email.message import Message
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

# The pattern email.feedparser builds for a boundary (unchanged from 3.2 to 3.13):
# '(?P<sep>' + re.escape('--' + boundary) + _BOUNDARY_TAIL
_BOUNDARY_HEAD = "(?P<sep>"
_BOUNDARY_TAIL = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_ESCAPED = re.compile(r"\\(.)", re.S)


class BoundaryMatch:
    """What ``re.Match`` offers the parser: ``group`` by name or number."""

    __slots__ = ("_groups",)

    def __init__(self, whole: str, sep: str, end: str | None, ws: str, linesep: str | None):
        self._groups = {0: whole, "sep": sep, 1: sep, "end": end, 2: end}
        self._groups.update({"ws": ws, 3: ws, "linesep": linesep, 4: linesep})

    def group(self, *names: str | int) -> Any:
        if not names:
            return self._groups[0]
        if len(names) == 1:
            return self._groups[names[0]]
        return tuple(self._groups[n] for n in names)


class BoundaryMatcher:
    """``re.compile(_BOUNDARY_HEAD + re.escape(sep) + _BOUNDARY_TAIL).match``, by hand.

    A line matches when it starts with the separator, optionally followed by ``--``,
    then spaces or tabs, then optionally one line ending, then the end of the line
    (``$``: the end, or just before a final newline).
    """

    __slots__ = ("pattern", "sep")

    def __init__(self, sep: str, pattern: str) -> None:
        self.sep, self.pattern = sep, pattern

    def match(self, line: str) -> BoundaryMatch | None:
        sep = self.sep
        if not line.startswith(sep):
            return None
        start = len(sep)
        end = None
        if line.startswith("--", start):
            # Without the "--" group, the blanks, line ending and end cannot start at "-".
            end, start = "--", start + 2
        n, i = len(line), start
        while i < n and line[i] in " \t":
            i += 1
        rest = line[i:]
        for linesep in ("\r\n", "\r", "\n"):
            if rest.startswith(linesep) and rest[len(linesep) :] in ("", "\n"):
                stop = i + len(linesep)
                return BoundaryMatch(line[:stop], sep, end, line[start:i], linesep)
        if rest == "":
            return BoundaryMatch(line, sep, end, line[start:i], None)
        return None


class _BoundaryAwareRe:
    """The ``re`` seen by the private feedparser: boundaries by hand, the rest as usual."""

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    @staticmethod
    def compile(pattern: Any, flags: int = 0) -> Any:
        if (
            not flags
            and isinstance(pattern, str)
            and pattern.startswith(_BOUNDARY_HEAD)
            and pattern.endswith(_BOUNDARY_TAIL)
        ):
            escaped = pattern[len(_BOUNDARY_HEAD) : -len(_BOUNDARY_TAIL)]
            sep = _ESCAPED.sub(r"\1", escaped)
            if re.escape(sep) == escaped:
                return BoundaryMatcher(sep, pattern)
        return re.compile(pattern, flags)


def _private_feedparser() -> ModuleType | None:
    source = getattr(email.feedparser, "__file__", None)
    spec = importlib.util.spec_from_file_location("mail._private_feedparser", source or "")
    if source is None or spec is None or spec.loader is None:
        return None
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception:  # no source to load: the standard parser as it is
        log.debug("private feedparser unavailable", exc_info=True)
        return None
    module.re = _BoundaryAwareRe()  # type: ignore[attr-defined]
    return module


_feedparser = _private_feedparser() or email.feedparser


def message_from_bytes(raw: bytes, headers_only: bool = False) -> Message:
    """``BytesParser(policy=compat32).parsebytes(raw, headers_only)``, the same result."""
    # As BytesParser does: bytes that are not ASCII survive as surrogate escapes.
    text = raw.decode("ascii", errors="surrogateescape")
    parser = _feedparser.FeedParser(policy=email_policy.compat32)
    if headers_only:
        parser._set_headersonly()
    parser.feed(text)
    message: Message = parser.close()
    return message
