"""Seeds derived from the trial: one place decides which randomness a trial fixes.

Trial t fixes the initialisation, the data order and the augmentation for every method, so methods
are compared paired. Each use of randomness asks for its own stream by name, e.g.
`derive_seed(trial, "init")` or `derive_seed(trial, "data", epoch)`, so adding a new use never shifts
an existing one.
"""

from __future__ import annotations

import hashlib


def derive_seed(trial: int, *names: object) -> int:
    """A 63-bit seed that depends only on the trial and the names (stable across runs and machines)."""
    text = "/".join([str(trial), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1
