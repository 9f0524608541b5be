"""Realistic internal help-desk mail, generated deterministically.

Used by ``deskq demo`` (a Maildir of about 200 requests to IT, HR and Facilities, with
threads, HTML-only mail, attachments and a few out-of-office replies) and by the
ingestion benchmark. The same seed always gives the same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid

DOMAIN = "corp.example"
QUEUES = {
    "it": ("IT Help", "IT", "it-help@corp.example", ["it@corp.example"]),
    "hr": ("People Team", "HR", "hr@corp.example", ["people@corp.example"]),
    "facilities": ("Facilities", "FAC", "facilities@corp.example", ["office@corp.example"]),
}
PEOPLE = [
    ("Amara Okafor", "amara.okafor"),
    ("Bjorn Lindqvist", "bjorn.lindqvist"),
    ("Chen Wei", "chen.wei"),
    ("Dolores Ruiz", "dolores.ruiz"),
    ("Emeka Nwosu", "emeka.nwosu"),
    ("Fatima Zahra", "fatima.zahra"),
    ("Grace Kim", "grace.kim"),
    ("Hugo Martin", "hugo.martin"),
    ("Ines Duarte", "ines.duarte"),
    ("Jonas Becker", "jonas.becker"),
    ("Keiko Tanaka", "keiko.tanaka"),
    ("Liam O'Brien", "liam.obrien"),
    ("Mei Lin", "mei.lin"),
    ("Nadia Haddad", "nadia.haddad"),
    ("Oskar Nowak", "oskar.nowak"),
    ("Priya Raman", "priya.raman"),
    ("Rafael Souza", "rafael.souza"),
    ("Sofia Rossi", "sofia.rossi"),
    ("Tomas Horvat", "tomas.horvat"),
    ("Zoë Müller", "zoe.muller"),
]
REQUESTS = {
    "it": [
        (
            "VPN keeps disconnecting",
            "My VPN drops every 10 minutes since the update on Monday. "
            "I am working from home and lose my RDP session each time.",
        ),
        (
            "Laptop will not boot",
            "My laptop shows a black screen with a blinking cursor after "
            "the BIOS logo. I have a client presentation at 3pm.",
        ),
        (
            "Password reset for SAP",
            "I locked myself out of SAP after three attempts. Could you reset my password please?",
        ),
        (
            "New starter needs an account",
            "We have a new colleague starting on the 1st in "
            "Finance. She needs email, Teams and access to the shared drive F:.",
        ),
        (
            "Printer on 3rd floor jams",
            "The printer near the kitchen on the 3rd floor jams on "
            "every duplex job. Error code 13.B2.D3.",
        ),
        (
            "Outlook search returns nothing",
            "Search in Outlook finds no mail older than last week. Indexing says it is complete.",
        ),
        (
            "Request: second monitor",
            "Could I get a second monitor? My manager approved it, cost centre 4410.",
        ),
        (
            "Wi-Fi in meeting room Atlas",
            "The guest Wi-Fi in meeting room Atlas does not hand "
            "out addresses; visitors cannot connect.",
        ),
        (
            "Phishing email?",
            "I received an email asking me to confirm my payroll details on a "
            "strange site. I did not click. Forwarding it to you.",
        ),
        (
            "MFA phone replaced",
            "I got a new phone and the authenticator app is empty. How do I move my MFA?",
        ),
    ],
    "hr": [
        (
            "Question about parental leave",
            "I am expecting a child in May. How many weeks of "
            "parental leave am I entitled to, and how do I apply?",
        ),
        (
            "Payslip shows wrong tax code",
            "My March payslip uses tax code 0T instead of 1257L. Could you check with payroll?",
        ),
        (
            "Change of address",
            "I moved. My new address is 12 Harbour Street. Please update my record.",
        ),
        (
            "Holiday balance",
            "The portal shows 3 days left but I think I should have 8. Can "
            "you check my carry-over from last year?",
        ),
        (
            "Reference letter",
            "I need an employment reference letter for a mortgage application by Friday.",
        ),
        (
            "Training budget",
            "Is there budget left this year for a conference? The one I "
            "have in mind costs 900 EUR.",
        ),
        ("Sick note", "I was ill from Tuesday to Thursday; attached is the doctor's note."),
    ],
    "facilities": [
        (
            "Heating in room 2.14",
            "It is 16 degrees in room 2.14 this morning. The radiator is cold.",
        ),
        ("Broken chair", "My chair's gas lift is broken; it sinks slowly all day."),
        ("Parking permit", "I need a parking permit for the new car, plate AB12 CDE."),
        (
            "Leak in the 1st floor toilets",
            "Water is leaking under the sink in the men's toilets on the 1st floor.",
        ),
        (
            "Book the atrium for Friday",
            "Can we book the atrium on Friday 4-6pm for a team farewell, about 40 people?",
        ),
        (
            "Desk move",
            "Our team moves from the 2nd to the 4th floor next week; 8 desks and 2 cabinets.",
        ),
    ],
}
REPLIES = [
    "Thanks, any news on this?",
    "Still happening this morning, unfortunately.",
    "I tried what you suggested and it works now. Thank you!",
    "Adding my manager in copy. Is there an update?",
    "Here is the screenshot you asked for.",
]
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5d0e4f60000000049454e44ae426082"
)
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


@dataclass(frozen=True)
class DemoMail:
    """One generated email and when it arrived."""

    raw: bytes
    date: datetime


def _message(
    rng: random.Random,
    sender: tuple[str, str],
    to: str,
    subject: str,
    body: str,
    date: datetime,
    *,
    html: bool = False,
    attachment: str | None = None,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[EmailMessage, str]:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = formataddr((sender[0], f"{sender[1]}@{DOMAIN}"))
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    mid = make_msgid(idstring=f"{rng.getrandbits(40):x}", domain="mail.corp.example")
    msg["Message-ID"] = mid
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = " ".join(references or [in_reply_to])
    for key, value in (headers or {}).items():
        msg[key] = value
    text = f"Hi,\n\n{body}\n\nBest regards,\n{sender[0]}\n"
    if html:
        paragraphs = "".join(f"<p>{p}</p>" for p in text.split("\n\n"))
        msg.set_content(f"<html><body>{paragraphs}</body></html>", subtype="html")
    else:
        msg.set_content(text)
    if attachment == "png":
        msg.add_attachment(PNG, maintype="image", subtype="png", filename="screenshot.png")
    elif attachment == "pdf":
        msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="document.pdf")
    return msg, mid


def generate(count: int = 200, seed: int = 7, now: datetime | None = None) -> Iterator[DemoMail]:
    """About ``count`` emails over the last three weeks, oldest first."""
    rng = random.Random(seed)
    now = now or datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    start = now - timedelta(days=21)
    mails: list[DemoMail] = []
    threads: list[tuple[str, tuple[str, str], str, str, datetime]] = []
    while len(mails) < count:
        roll = rng.random()
        if threads and roll < 0.25:
            parent_id, sender, to, subject, when = rng.choice(threads)
            date = when + timedelta(hours=rng.uniform(2, 72))
            msg, mid = _message(
                rng,
                sender,
                to,
                f"Re: {subject}",
                rng.choice(REPLIES),
                date,
                in_reply_to=parent_id,
                attachment="png" if rng.random() < 0.2 else None,
            )
        elif roll < 0.28:
            person = rng.choice(PEOPLE)
            date = start + timedelta(hours=rng.uniform(0, 21 * 24))
            msg, mid = _message(
                rng,
                person,
                "it-help@corp.example",
                f"Automatic reply: {rng.choice(REQUESTS['it'])[0]}",
                "I am out of the office until Monday with limited access to email.",
                date,
                headers={"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"},
            )
        else:
            key = rng.choices(list(REQUESTS), weights=[5, 3, 2])[0]
            _name, _tag, address, aliases = QUEUES[key]
            to = rng.choice([address, *aliases])
            subject, body = rng.choice(REQUESTS[key])
            person = rng.choice(PEOPLE)
            date = start + timedelta(hours=rng.uniform(0, 21 * 24))
            attachment = rng.choice([None, None, None, "png", "pdf"])
            msg, mid = _message(
                rng,
                person,
                to,
                subject,
                body,
                date,
                html=rng.random() < 0.15,
                attachment=attachment,
            )
            threads.append((mid, person, to, subject, date))
        mails.append(DemoMail(msg.as_bytes(), min(date, now)))
    mails.sort(key=lambda m: m.date)
    yield from mails
