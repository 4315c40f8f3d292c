"""The `synlens` command (and `python -m analyzer`): the process set up, then the libraries loaded, then
the command line run (analyzer.cli).

Two settings only a whole program may make, made here before numpy, pandas and scipy load:

- Their BLAS (OpenBLAS, one copy in numpy's wheel and one in scipy's) start a worker thread each when they
  load, which spins on the other core for a tenth of a second waiting for work that never comes: no
  command does linear algebra. One BLAS thread, unless the environment asks for more.
- The libraries' imports make a few hundred thousand objects that live as long as the process: the cyclic
  garbage collector is paused while they are made, and they are then frozen out of its passes, which would
  walk them again and again (60 ms, measured with gc.callbacks) and find nothing to free.

And one for glibc's malloc: a command makes and frees arrays of megabytes by the dozen. By default each
above a threshold (which adapts, from 128 kB) is mapped afresh and given back when freed, so the next one
faults in new zeroed pages: a third of a million-probe command's page faults. With blocks up to 32 MB
(the documented maximum) taken from the heap and freed memory kept there for reuse, `rtt` takes 46,000
page faults instead of 71,000 and `scans` 65,000 instead of 104,000 (0.05-0.1 s), for 20 MB more peak memory
(`rtt` on the benchmark capture: 2.9x the file, under the 3x it must stay under). Measured: keeping 32 MB or
less of free heap would keep the old peak and most of `rtt`'s saving, but none of `scans`'.

And one for numpy's optional submodules: scipy.special's array-API layer (scipy/_lib/array_api_compat, its
`clone_module`) reads every attribute of numpy, and each read of `numpy.f2py` or `numpy.testing` imports
that submodule: f2py with charset_normalizer, testing with unittest and email. No command uses them; they
cost 60-90 ms and 2,000 page faults of every command that tests RTTs. They are registered as lazy modules
(importlib.util.LazyLoader): the attribute read finds the module, and its code runs only when something
looks inside it, so a program that uses either still gets the whole module.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt(3) parameters (glibc's malloc.h)
_UNUSED_NUMPY = ("f2py", "testing")  # numpy submodules no command uses (see above)


def _reuse_freed_memory() -> None:
    """glibc: blocks up to 32 MB from the heap, and the heap's free memory kept (see above). Elsewhere (no
    mallopt, or another allocator) nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def _defer_unused_numpy() -> None:
    """numpy.f2py and numpy.testing made lazy modules (see above), unless already loaded."""
    import numpy

    for name in _UNUSED_NUMPY:
        full = f"numpy.{name}"
        spec = None if full in sys.modules else importlib.util.find_spec(full)
        if spec is None or spec.loader is None:
            continue
        spec.loader = importlib.util.LazyLoader(spec.loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)  # (lazy: only prepares the module to run on first use)
        setattr(numpy, name, module)  # what numpy's own __getattr__ would bind on first read


def main() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _reuse_freed_memory()
    gc.disable()
    _defer_unused_numpy()
    from .cli import run  # numpy, pandas and the analyzer's modules

    gc.freeze()
    gc.enable()
    run()


if __name__ == "__main__":
    main()
