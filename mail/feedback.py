"""Requester feedback: a rating from 1 to 5 on the first line of a reply to a resolved ticket.

Accepted first lines (nothing else on the line): ``5``, ``5/5``, ``4 / 5``, ``4 of 5``,
``4 out of 5``, ``4 stars``, ``****``, ``★★★★``, ``rating: 4``, ``Rating 4/5``. The
lines after it are the comment. Anything else is not a rating, so a reply like
"2 monitors please" reopens the ticket as a reply should.
"""

from __future__ import annotations

import re

from mail.quotes import own_text

_NUMBER = re.compile(
    r"^(?:(?:rating|score|note|bewertung)\s*[:=]?\s*)?([1-5])"
    r"(?:\s*(?:/\s*5|of\s*5|out\s+of\s+5|stars?|sterne?))?\s*[.!]*$",
    re.IGNORECASE,
)
_STARS = re.compile(r"^(?:(?:rating|score)\s*[:=]?\s*)?([*★⭐]{1,5})\s*[.!]*$", re.IGNORECASE)


def parse_rating(text: str) -> tuple[int, str] | None:
    """(rating, comment) when the message's own first line is a rating, else None."""
    lines = [line.strip() for line in own_text(text).splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        return None
    first = lines[0]
    m = _NUMBER.match(first)
    if m:
        rating = int(m[1])
    else:
        stars = _STARS.match(first)
        if not stars:
            return None
        rating = len(stars[1])
    comment = "\n".join(lines[1:]).strip()
    # A signature separator ends the comment.
    comment = comment.split("\n-- ", 1)[0].split("\n--\n", 1)[0].strip()
    return rating, comment[:2000]
