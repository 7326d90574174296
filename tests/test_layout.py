"""Test modules are collected by basename (pytest's default import mode, no packages under tests/): two
test files with the same name in different folders stop the whole collection.  Keep every name unique."""
from collections import Counter
from pathlib import Path


def test_test_file_names_are_unique():
    names = Counter(p.name for p in Path(__file__).parent.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
