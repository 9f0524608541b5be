"""Both ways of running a full-text search give the same pages (SQLite).

A very common word is matched by walking the tickets in order and probing the index;
a rarer one by listing its matches. Forcing each path must not change any result.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from store import query as query_module
from store.config import parse_settings
from store.db import Database
from store.models import Direction, Message, Queue
from store.pages import fetch_page
from store.query import parse_query
from store.services import get_or_create_person, open_ticket
from store.workspace import sync_queues

CONFIG = '[[queue]]\nkey = "it"\nname = "IT"\ntag = "IT"\naddress = "it@corp.example"\n'


@pytest.fixture
def searchable(sqlite_url: str) -> Database:
    db = Database.open(sqlite_url)
    with db.write() as s:
        sync_queues(s, parse_settings(CONFIG))
        queue = s.scalars(select(Queue)).one()
        who = get_or_create_person(s, "emp@corp.example")
        for i in range(120):
            t = open_ticket(s, queue=queue, requester=who, subject=f"request {i}")
            words = ["printer"] if i % 3 == 0 else ["laptop"]
            if i % 7 == 0:
                words.append("vpn")
            s.add(
                Message(
                    ticket_id=t.id,
                    direction=Direction.INBOUND,
                    from_addr="emp@corp.example",
                    subject=f"request {i}",
                    text_body=" ".join(words) + " please help",
                )
            )
    return db


def _walk(db: Database, text: str) -> list[int]:
    q = parse_query(text)
    ids: list[int] = []
    with db.session() as s:
        page = fetch_page(s, q, None, limit=7)
        while page:
            ids += [r.ticket.id for r in page]
            page = fetch_page(s, q, None, after=page[-1].key, limit=7)
    return ids


@pytest.mark.parametrize("text", ["printer", "vpn printer", "help", "nothing", "sort:-id laptop"])
def test_walking_and_listing_give_the_same_pages(
    searchable: Database, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setattr(query_module, "probe_threshold", lambda messages: 10**9)
    listed = _walk(searchable, text)
    monkeypatch.setattr(query_module, "probe_threshold", lambda messages: 1)
    walked = _walk(searchable, text)
    assert walked == listed
    if text != "nothing":
        assert listed, "the data must give the search something to find"
