"""Quoted history in message bodies: ``>`` quoting, attribution lines, Outlook headers."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mail.quotes import Block, own_text, split_quotes


def _joined(blocks: list[Block]) -> str:
    return "\n".join(line for b in blocks for line in b.lines)


def _shape(text: str) -> list[tuple[bool, tuple[str, ...]]]:
    return [(b.quoted, b.lines) for b in split_quotes(text)]


# ------------------------------------------------------------------ no quotes


def test_text_without_quotes_is_one_own_block() -> None:
    text = "Hello,\n\nthe VPN is down again.\nOn Monday it worked.\n\nBob"
    assert _shape(text) == [(False, tuple(text.split("\n")))]
    assert own_text(text) == text


def test_empty_text() -> None:
    assert _shape("") == [(False, ("",))]
    assert own_text("") == ""
    assert own_text("\n\n  \n") == ""


def test_own_text_strips_surrounding_blank_lines() -> None:
    assert own_text("\n\n  Thanks!\n\n> old\n") == "Thanks!"


# ------------------------------------------------------------------ '>' quoting


def test_gt_quoting_at_the_end() -> None:
    text = "Still broken.\n\n> Did you restart it?\n> Please try.\n>"
    assert _shape(text) == [
        (False, ("Still broken.", "")),
        (True, ("> Did you restart it?", "> Please try.", ">")),
    ]
    assert own_text(text) == "Still broken."


def test_gt_quoting_with_leading_whitespace_and_nesting() -> None:
    text = "ok\n  > indented quote\n>> nested\n> > spaced nesting"
    assert _shape(text) == [
        (False, ("ok",)),
        (True, ("  > indented quote", ">> nested", "> > spaced nesting")),
    ]


def test_gt_inside_a_line_is_not_a_quote() -> None:
    text = "a -> b\nx >= 3"
    assert _shape(text) == [(False, ("a -> b", "x >= 3"))]


def test_quotes_in_the_middle_interleaved_answers() -> None:
    text = "Hi,\n> Is the VPN down?\nYes, since 9.\n> Which office?\n> Which floor?\nBerlin, 3rd."
    assert _shape(text) == [
        (False, ("Hi,",)),
        (True, ("> Is the VPN down?",)),
        (False, ("Yes, since 9.",)),
        (True, ("> Which office?", "> Which floor?")),
        (False, ("Berlin, 3rd.",)),
    ]
    assert own_text(text) == "Hi,\nYes, since 9.\nBerlin, 3rd."


def test_message_that_is_only_a_quote() -> None:
    assert _shape("> a\n> b") == [(True, ("> a", "> b"))]
    assert own_text("> a\n> b") == ""


# ------------------------------------------------------------------ attribution lines


@pytest.mark.parametrize(
    "attribution",
    [
        "On Mon, 2 Mar 2026 at 10:00, Bob Example <bob@corp.example> wrote:",
        "On 02/03/2026 10:00, bob@corp.example wrote:",
        "  on Monday, Bob wrote:  ",
        "Am 02.03.2026 um 10:00 schrieb Bob Example <bob@corp.example>:",
        "Am Mo., 2. März 2026 um 10:00 Uhr schrieb Bob <bob@corp.example>:",
        "Le lun. 2 mars 2026 à 10:00, Bob <bob@corp.example> a écrit :",
        "Le 02/03/2026 à 10:00, Bob a écrit\u00a0:",
        "Le 02/03/2026, Bob a écrit:",
    ],
)
def test_attribution_line_starts_the_history(attribution: str) -> None:
    text = f"Thanks, that fixed it.\n\n{attribution}\n> Please restart.\n> \n> IT"
    own, history = split_quotes(text)
    assert own == Block(False, ("Thanks, that fixed it.", ""))
    assert history == Block(True, (attribution, "> Please restart.", "> ", "> IT"))
    assert own_text(text) == "Thanks, that fixed it."


def test_everything_after_the_attribution_is_history_even_unquoted() -> None:
    text = "Done.\nOn Mon, Bob wrote:\nplain history line\n\nmore history"
    assert _shape(text) == [
        (False, ("Done.",)),
        (True, ("On Mon, Bob wrote:", "plain history line", "", "more history")),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "On Monday it broke again.",
        "On Monday Bob wrote: the server is down",  # not at the end of the line
        "Once upon a time Bob wrote:",  # "On" must be a word
        "Am Ende schrieb er nichts",
        "Le serveur a écrit des logs.",
    ],
)
def test_lines_that_only_look_like_attributions(line: str) -> None:
    text = f"Hello\n{line}\nBye"
    assert _shape(text) == [(False, ("Hello", line, "Bye"))]


def test_gt_quotes_before_the_attribution_are_their_own_block() -> None:
    text = "> earlier quote\nmy answer\nOn Tue, Carol wrote:\n> older"
    assert _shape(text) == [
        (True, ("> earlier quote",)),
        (False, ("my answer",)),
        (True, ("On Tue, Carol wrote:", "> older")),
    ]
    assert own_text(text) == "my answer"


def test_interleaved_answers_after_an_attribution_line_stay_own_text() -> None:
    text = (
        "On Mon, 2 Mar 2026 at 10:00, Carol <carol@corp.example> wrote:\n"
        "> Is the VPN down?\n"
        "Yes, since 9am.\n"
        "> Which office?\n"
        "Berlin."
    )
    assert own_text(text) == "Yes, since 9am.\nBerlin."


# ------------------------------------------------------------------ Outlook


@pytest.mark.parametrize(
    "separator",
    [
        "-----Original Message-----",
        "  ----- Original Message -----  ",
        "-----original message-----",
        "-----Ursprüngliche Nachricht-----",
        "-----Message d'origine-----",
        "________________________________",
    ],
)
def test_outlook_separator_starts_the_history(separator: str) -> None:
    text = (
        f"See attached.\n\n{separator}\nFrom: Carol\nSent: Monday, March 2, 2026 10:00\n"
        "To: IT\nSubject: VPN\n\nPlease restart."
    )
    blocks = split_quotes(text)
    assert blocks[0] == Block(False, ("See attached.", ""))
    assert blocks[1].quoted and blocks[1].lines[0] == separator
    assert blocks[1].lines[-1] == "Please restart."
    assert len(blocks) == 2
    assert own_text(text) == "See attached."


@pytest.mark.parametrize(
    ("from_line", "next_line"),
    [
        ("From: Carol Example <carol@corp.example>", "Sent: Monday, March 2, 2026 10:00 AM"),
        ("From: Carol", "To: IT Help"),
        ("From: Carol", "Date: Mon, 2 Mar 2026"),
        ("*From:* Carol", "*Sent:* Monday"),
        ("Von: Carol", "Gesendet: Montag, 2. März 2026 10:00"),
        ("Von: Carol", "An: IT"),
        ("De : Carol", "Envoyé : lundi 2 mars 2026 10:00"),
        ("De: Carol", "À: IT"),
        ("From: Carol", "sent: lower-case header"),
    ],
)
def test_outlook_header_block_starts_the_history(from_line: str, next_line: str) -> None:
    text = f"Done, closing.\n{from_line}\n{next_line}\nSubject: VPN\n\nold text"
    assert _shape(text) == [
        (False, ("Done, closing.",)),
        (True, (from_line, next_line, "Subject: VPN", "", "old text")),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "From: the logs I see an error\nit says timeout",
        "From: Carol\n\nSent: too late",  # the header lines must be adjacent
        "Sent: Monday\nFrom: Carol",
        "From: Carol",  # last line: nothing follows
    ],
)
def test_from_lines_that_are_not_an_outlook_block(text: str) -> None:
    assert _shape(text) == [(False, tuple(text.split("\n")))]


def test_history_starts_at_the_first_marker() -> None:
    text = "top\n-----Original Message-----\nFrom: A\nSent: x\n\nOn Mon, B wrote:\n> y"
    assert _shape(text) == [(False, ("top",)), (True, tuple(text.split("\n")[1:]))]


def test_crlf_free_and_crlf_input() -> None:
    lf = "Thanks\nOn Mon, Bob wrote:\n> hi"
    assert _shape(lf) == [(False, ("Thanks",)), (True, ("On Mon, Bob wrote:", "> hi"))]
    crlf = lf.replace("\n", "\r\n")
    blocks = split_quotes(crlf)
    assert [b.quoted for b in blocks] == [False, True]
    assert _joined(blocks) == crlf


# ------------------------------------------------------------------ properties

_LINES = st.sampled_from(
    [
        "",
        "   ",
        "plain text",
        "> quoted",
        "  >> nested",
        ">",
        "On Mon, Bob wrote:",
        "Am 2. März schrieb Bob:",
        "Le 2 mars, Bob a écrit :",
        "-----Original Message-----",
        "_" * 12,
        "From: Carol",
        "Sent: Monday",
        "To: IT",
        "Von: Carol",
        "a -> b",
    ]
)
_TEXTS = st.one_of(
    st.lists(st.one_of(_LINES, st.text(max_size=30)), max_size=12).map("\n".join),
    st.text(),
)


@settings(max_examples=300, deadline=None)
@given(_TEXTS)
def test_blocks_give_back_the_original_text(text: str) -> None:
    blocks = split_quotes(text)
    assert _joined(blocks) == text
    assert all(b.lines for b in blocks)
    # own blocks and '>' blocks alternate; only the history tail may follow a quoted block
    for prev, cur in itertools.pairwise(blocks):
        assert prev.quoted != cur.quoted or (cur is blocks[-1] and cur.quoted)
    own = own_text(text)
    assert own == "\n".join(line for b in blocks if not b.quoted for line in b.lines).strip()
    assert not any(line.lstrip().startswith(">") for line in own.split("\n"))
