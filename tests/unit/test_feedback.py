"""Ratings on the first line of a reply to a resolved ticket."""

from __future__ import annotations

import pytest

from mail.feedback import parse_rating


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", (5, "")),
        ("5/5\nThanks, great help!", (5, "Thanks, great help!")),
        ("4 / 5", (4, "")),
        ("  ****  \n\nquick and friendly", (4, "quick and friendly")),
        ("★★★", (3, "")),
        ("Rating: 2\nTook a week.", (2, "Took a week.")),
        ("rating 1/5", (1, "")),
        ("4 out of 5.", (4, "")),
        ("3 stars", (3, "")),
        ("5\nThanks\n-- \nAmara Okafor\nFinance", (5, "Thanks")),
        ("5\n\nOn Mon, IT wrote:\n> How did we do?", (5, "")),
    ],
)
def test_ratings(text: str, expected: tuple[int, str]) -> None:
    assert parse_rating(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "It still does not work", "2 monitors please", "6/5", "0", "5 minutes later it broke",
     "******", "> 5\nquoted only"],
)  # fmt: skip
def test_not_ratings(text: str) -> None:
    assert parse_rating(text) is None
