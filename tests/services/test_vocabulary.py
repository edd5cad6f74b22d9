"""Label lookup: prefixes, substrings and near spellings find the Kinetics names, best kind first."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.vocabulary import MatchKind, find_labels, match_kind

KINETICS = [
    line.strip()
    for line in (Path(__file__).resolve().parents[2] / "model_store/labels/kinetics400.txt")
    .read_text()
    .splitlines()
    if line.strip()
]


def _names(query: str) -> list[str]:
    return [m.label for m in find_labels(query, [(label, 1) for label in KINETICS])]


def test_a_prefix_finds_every_label_that_starts_with_it() -> None:
    # Prefixes of the label first, then of one of its words.
    assert _names("jugg") == ["juggling balls", "juggling fire", "juggling soccer ball", "contact juggling"]
    assert _names("JUGGLING") == _names("juggling") == _names("  juggling ")


def test_word_prefixes_and_substrings_come_after_prefixes() -> None:
    found = find_labels("ball", [(label, 1) for label in KINETICS])
    kinds = [m.kind for m in found]
    assert kinds == sorted(kinds)
    assert found[0].label == "balloon blowing" and found[0].kind is MatchKind.prefix
    assert "juggling balls" in [m.label for m in found if m.kind is MatchKind.word_prefix]
    assert match_kind("ball", "dodgeball") is MatchKind.substring


def test_a_near_spelling_is_found() -> None:
    assert "juggling balls" in _names("jugling")
    assert _names("surfng water") == ["surfing water"]
    assert _names("zzzz") == []


@pytest.mark.parametrize(("query", "label", "kind"), [("Surfing Water", "surfing water", MatchKind.exact)])
def test_exact_matches_ignore_case(query: str, label: str, kind: MatchKind) -> None:
    assert match_kind(query, label) is kind


def test_more_common_labels_come_first_within_a_kind() -> None:
    vocabulary = [("juggling fire", 1), ("juggling balls", 7)]
    assert [m.label for m in find_labels("jugg", vocabulary)] == ["juggling balls", "juggling fire"]
