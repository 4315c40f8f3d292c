"""The `synlens` command (and `python -m analyzer`): the process set up, then the libraries loaded, then
the command line run (analyzer.cli).

Two settings only a whole program may make, made here before numpy, pandas and scipy load:

- Their BLAS (OpenBLAS, one copy in numpy's wheel and one in scipy's) start a worker thread each when they
  load, which spins on the other core for a tenth of a second waiting for work that never comes: no
  command does linear algebra. One BLAS thread, unless the environment asks for more.
- The libraries' imports make a few hundred thousand objects that live as long as the process: the cyclic
  garbage collector is paused while they are made, and they are then frozen out of its passes, which would
  walk them again and again (60 ms, measured with gc.callbacks) and find nothing to free.
"""

from __future__ import annotations

import gc
import os


def main() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    gc.disable()
    from .cli import run  # numpy, pandas and the analyzer's modules

    gc.freeze()
    gc.enable()
    run()


if __name__ == "__main__":
    main()
