"""Stable train/val/test splits from an item's id alone (80/10/10)."""

from __future__ import annotations

import hashlib

SPLIT_FRACTIONS = (("train", 0.8), ("val", 0.1), ("test", 0.1))


def stable_split(item_id: str) -> str:
    """train/val/test 80/10/10 from a hash of the id (stable across runs and machines)."""
    h = int.from_bytes(hashlib.sha1(item_id.encode("utf-8")).digest()[:8], "big") / 2**64
    acc = 0.0
    for name, frac in SPLIT_FRACTIONS:
        acc += frac
        if h < acc:
            return name
    return SPLIT_FRACTIONS[-1][0]
