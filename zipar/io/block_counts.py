"""Comparing the repeated blocks a config describes with those the weights hold, before building.

A network is built from its config before the weights are checked against it; a config that
claims a million layers (a damaged or hostile file) would spend minutes building modules
first. Counting the numbered blocks among the weight names costs nothing and catches it.
"""
from __future__ import annotations

import re
from typing import Iterable

from ..errors import ZipARError


def indexed_count(keys: Iterable[str], prefix: str) -> int:
    """How many blocks ``prefix`` + N. the weights hold (highest N + 1; 0 when none)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = [int(m.group(1)) for k in keys if (m := pattern.match(k))]
    return max(found) + 1 if found else 0


def check_block_counts(keys: Iterable[str], expected: dict[str, int], where: str, fix: str) -> None:
    """``expected``: weight-name prefix of a numbered block -> how many the config describes."""
    keys = list(keys)
    for prefix, count in expected.items():
        held = indexed_count(keys, prefix)
        if held != count:
            raise ZipARError(f"{where}: the config describes {count} blocks '{prefix}N' but the weights hold {held}; "
                             f"{fix}.")
