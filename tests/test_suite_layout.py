"""The suite's own layout: the files tests/conftest.py names for the slow set, the solo pass and the scheduling order
exist, so a renamed test file cannot silently fall out of them."""

from __future__ import annotations

from conftest import HEAVIEST_FILES, ROOT, SLOW_FILES, SOLO_FILES


def test_every_file_the_suite_layout_names_exists():
    named = set(HEAVIEST_FILES) | SLOW_FILES | SOLO_FILES
    assert sorted(n for n in named if not (ROOT / "tests" / n).is_file()) == []
    assert len(HEAVIEST_FILES) == len(set(HEAVIEST_FILES))
