"""Small shared facts for the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# The shared corpus of real-world broken mail sits beside the checkout (../shared);
# DESKQ_CORPUS_DIR points elsewhere. Tests that need it skip (or, in CI, fail) without.
CORPUS = (
    Path(os.environ.get("DESKQ_CORPUS_DIR", Path(__file__).resolve().parents[2] / "shared/corpus"))
    / "django-mailbox"
)


def empty_database_with_4k_pages(path: Path) -> str:
    """The URL of an empty SQLite file with 4 KB pages: a database made before deskq
    chose larger ones (SQLite fixes the page size once the file has a table)."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("DROP TABLE t")
    return f"sqlite:///{path}"


def record_batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The raw size of every email of every batch stored from now on (in order)."""
    from mail.ingest import Ingestor, Outcome

    batches: list[list[int]] = []
    real = Ingestor.store_batch

    def recording(self: Ingestor, prepared: list[Any], **kw: Any) -> list[Outcome]:
        batches.append([len(p.item.raw) for p in prepared])
        return real(self, prepared, **kw)

    monkeypatch.setattr(Ingestor, "store_batch", recording)
    return batches


def record_args(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, pick: Callable[..., Any]
) -> list[Any]:
    """What ``pick`` takes from the arguments of every call to ``owner.name`` from now
    on, recorded before the call (which goes through unchanged, raising or not)."""
    calls: list[Any] = []
    real = getattr(owner, name)

    def recording(*args: Any, **kw: Any) -> Any:
        calls.append(pick(*args, **kw))
        return real(*args, **kw)

    monkeypatch.setattr(owner, name, recording)
    return calls


def modules_loaded_by(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules named with one of ``prefixes`` that a fresh interpreter has loaded
    once it has run ``code`` (to show a start-up path leaves heavy modules out)."""
    shown = f"print('\\n'.join(m for m in sys.modules if m.startswith({prefixes!r})))"
    script = f"import sys\n{code}\n{shown}"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return sorted(done.stdout.split())
