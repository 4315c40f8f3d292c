"""The `synlens` command (and `python -m analyzer`): the process set up (accel/tuning.py), then the
libraries loaded, then the command line run (analyzer.cli)."""

from __future__ import annotations

import gc
import sys


def main() -> None:
    from .accel.tuning import prepare  # (loads neither numpy nor pandas until it defers numpy's extras)

    gc.disable()  # the imports' few hundred thousand lasting objects: no collector passes over them
    prepare(sys.argv[1:])
    from .cli import run  # numpy, pandas and the analyzer's modules

    gc.freeze()
    gc.enable()
    run()


if __name__ == "__main__":
    main()
