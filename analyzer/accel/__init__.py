"""The compiled reader loops, radix sort, key order and dense factorize (analyzer/accel/_fast.c), when they were built.

`FAST` is the module, or None: when no C compiler was found at install time (setup.py builds it as optional),
when the build is of other sources than these (its API number differs: a checkout updated without `pip install
-e .` again), or when the environment sets SYNLENS_PURE=1 to ask for the numpy code (the reference: tests compare
the two on every capture, and the benchmark times both). Callers look it up at each call, so tests may swap it.
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("SYNLENS_PURE", "") not in ("", "0"):
        return None
    try:
        from . import _fast
    except ImportError:
        return None
    return _fast if getattr(_fast, "API", None) == API else None


API = 7  # the interface analyzer/accel/_fast.c's API_VERSION names


FAST: ModuleType | None = _load()
