"""Speed behind one boundary: the compiled code and the numpy reference of every primitive that has both.

One module per primitive picks the compiled code where it was built, and runs its numpy (or Python) reference
where it was not; nothing outside this package asks which ran. The references are the specification: the tests
compare the two on every capture they read.

=============  ===============================================================================================
module         primitive
=============  ===============================================================================================
walk.py        a classic pcap's record chain; pcapng's runs of enhanced packet blocks (_reader.c)
decode.py      the dominant layout (Ethernet / IPv4 / TCP) decoded straight into the packets table (_reader.c)
order.py       an in-place radix sort of uint64 keys, the matcher's order by (key, time), each reply's latest
               transmission in that order (_sort.c)
keys.py        a column shifted into packed uint64 keys; integer keys numbered by first appearance (_sort.c)
buffers.py     a capture's pages given back behind a walk, growing per-record arrays (no compiled code)
tuning.py      the `synlens` process set up before numpy, pandas and scipy load (no compiled code)
=============  ===============================================================================================

`COMPILED` holds the two extension modules, or None for each: where no C compiler was found at install time
(setup.py builds them as optional), where a build is of other sources than these (its API number differs: a
checkout updated without `pip install -e .` again), or where the environment sets SYNLENS_PURE=1 to ask for the
references. The primitives look it up at each call, so tests may swap it (`NONE`: the references only).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Compiled:
    """The compiled modules in use: the reader's loops (_reader.c) and keys and their order (_sort.c)."""

    reader: ModuleType | None
    sort: ModuleType | None


# The interface each module's API_VERSION names.
API = {"_reader": 1, "_sort": 1}


def _load(name: str) -> ModuleType | None:
    if os.environ.get("SYNLENS_PURE", "") not in ("", "0"):
        return None
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ImportError:
        return None
    return module if getattr(module, "API", None) == API[name] else None


NONE = Compiled(None, None)
COMPILED: Compiled = Compiled(_load("_reader"), _load("_sort"))
