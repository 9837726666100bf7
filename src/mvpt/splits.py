"""Stable train/val/test splits (80/10/10) from a hash of an item's group, or of its id.

Items that share a *group* (the music regions of one film, the clips of one video) share a split,
so no film's actors or score are in train and in test at once. An item without a group is its
own group.
"""

from __future__ import annotations

import hashlib

SPLIT_FRACTIONS = (("train", 0.8), ("val", 0.1), ("test", 0.1))


def stable_split(item_id: str, group: str | None = None) -> str:
    """train/val/test 80/10/10 from a hash of ``group`` when it is given and not blank, else of
    ``item_id`` (stable across runs and machines)."""
    key = group.strip() if group and group.strip() else item_id
    h = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64
    acc = 0.0
    for name, frac in SPLIT_FRACTIONS:
        acc += frac
        if h < acc:
            return name
    return SPLIT_FRACTIONS[-1][0]
