"""The LISTEN connection gets the URL's parts as keywords: any password survives intact."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from store.notify import connect_args


def test_a_password_with_spaces_and_at_signs_is_passed_as_is() -> None:
    url = make_url("postgresql+psycopg://carol:p%20w%40rd@db.corp.example:5433/deskq")
    url = url.update_query_dict({"sslmode": "verify-full", "options": "-c a=b"})
    assert connect_args(url) == {
        "host": "db.corp.example",
        "port": 5433,
        "user": "carol",
        "password": "p w@rd",
        "dbname": "deskq",
        "sslmode": "verify-full",
        "options": "-c a=b",
    }
