"""The suite's own layout: the tier is the folder (tests/unit, tests/integration, tests/e2e), and the files
tests/conftest.py names for the solo pass and the scheduling order exist, so a renamed or moved test file cannot
silently fall out of them."""

from __future__ import annotations

from conftest import HEAVIEST_FILES, ROOT, SOLO_FILES, TIERS


def test_every_file_the_suite_layout_names_exists():
    named = set(HEAVIEST_FILES) | SOLO_FILES
    assert sorted(n for n in named if not (ROOT / "tests" / n).is_file()) == []
    assert len(HEAVIEST_FILES) == len(set(HEAVIEST_FILES))


def test_every_test_file_is_in_a_tier_folder():
    tests = ROOT / "tests"
    assert sorted(p.name for p in tests.glob("test_*.py")) == []
    assert sorted(p.parent.name for p in tests.glob("*/test_*.py") if p.parent.name not in TIERS) == []
