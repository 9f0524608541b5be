"""Small shared facts for the tests."""

from __future__ import annotations

import os
from pathlib import Path

# The shared corpus of real-world broken mail sits beside the checkout (../shared);
# DESKQ_CORPUS_DIR points elsewhere. Tests that need it skip (or, in CI, fail) without.
CORPUS = (
    Path(os.environ.get("DESKQ_CORPUS_DIR", Path(__file__).resolve().parents[2] / "shared/corpus"))
    / "django-mailbox"
)
