"""The `synlens` process set up before numpy, pandas and scipy load (analyzer/__main__.py calls `prepare`).

Settings only a whole program may make, made here before numpy, pandas and scipy load:

- Their BLAS (OpenBLAS, one copy in numpy's wheel and one in scipy's) start a worker thread each when they
  load, which spins on the other core for a tenth of a second waiting for work that never comes: no
  command does linear algebra. One BLAS thread, unless the environment asks for more.
- The libraries' imports make a few hundred thousand objects that live as long as the process: the cyclic
  garbage collector is paused while they are made, and they are then frozen out of its passes, which would
  walk them again and again (60 ms, measured with gc.callbacks) and find nothing to free.
- glibc's malloc: a command makes and frees arrays of megabytes by the dozen. By default each above a
  threshold (which adapts, from 128 kB) is mapped afresh and given back when freed, so the next one faults in
  new zeroed pages: a third of a million-probe command's page faults. With blocks up to 32 MB (the documented
  maximum) taken from the heap and freed memory kept there for reuse, `rtt` takes 46,000 page faults instead
  of 71,000 and `scans` 65,000 instead of 104,000 (0.05-0.1 s), for 20 MB more peak memory (`rtt` on the
  benchmark capture: 2.9x the file, under the 3x it must stay under). Keeping 32 MB or less of free heap
  would keep peak memory and most of `rtt`'s saving, but none of `scans`'.
- The heap's pages faulted in ahead of use, on the other core. Each page a command touches for the first
  time costs the kernel a fault (2-3 µs each on this project's virtual machine, more when it is busy; a
  million-probe command takes about 50,000, most in numpy's fresh arrays). While the libraries load, the
  heap is grown by as much as the capture's size (at most 256 MB; a command on a scan capture uses two to
  three times that), handed back to malloc (which keeps it, above), and a background thread faults it in with
  madvise(MADV_POPULATE_WRITE, Linux 5.14+), 8 MB a call so that the loader's own mappings are never held up
  for long. The arrays the command then makes find their pages there: in alternating runs on the benchmark
  capture, `rtt` and `scans` take 5-8% less time with it on a quiet machine, 12-15% on a busy one; peak
  memory is the same. A capture of few, large packets
  is where a command uses less than was faulted in: its peak then holds up to the capture's size unused.
- numpy's transparent huge pages: numpy advises the kernel (madvise MADV_HUGEPAGE) to back every array of
  4 MB or more with 2 MB pages. Where the kernel's THP "defrag" setting is "madvise" (Debian's default, and
  this project's machines'), a first touch in such an array makes the faulting thread assemble and zero a
  whole 2 MB page at once, compacting memory when it must, and the advice splits the heap's mappings at
  every such array. A command makes and drops dozens of such arrays; the 4 kB pages of the heap (faulted in
  ahead, above) serve it better. The advice is off unless the environment asks for it (numpy's own
  NUMPY_MADVISE_HUGEPAGE): in alternating runs on the benchmark capture (medians of 10), `scans` takes 14%
  less time with it off (a third less system time) and `rtt` 4%; peak memory is the same.
- numpy's optional submodules: scipy.special's array-API layer (scipy/_lib/array_api_compat, its
  `clone_module`) reads every attribute of numpy, and each read of `numpy.f2py` or `numpy.testing` imports
  that submodule: f2py with charset_normalizer, testing with unittest and email. No command uses them; they
  cost 60-90 ms and 2,000 page faults of every command that tests RTTs. They are registered as lazy modules
  (importlib.util.LazyLoader): the attribute read finds the module, and its code runs only when something
  looks inside it, so a program that uses either still gets the whole module.

One call a long command makes later (`give_back_freed_memory`): a capture read a chunk at a time frees each
chunk's arrays, and the heap keeps what they took (above: up to 1 GB at its top, and the holes between the rows
kept of each chunk); the tables then joined from the rows kept, and the readings' arrays, above 32 MB, are mapped
afresh beside it. Once the chunks are read, once their rows are joined, and after each reading of them (`scans`,
then `hosts`), the heap's free memory is handed back (glibc's malloc_trim), and from the first call on the heap
keeps at most 64 MB free at its top, not 1 GB: the readings of millions of probes make and free arrays of tens of
megabytes, under the 32 MB that would map them afresh. The 20 GB benchmark's `scans` peaks 0.7 GB lower for the
first two calls. With the first two alone, `scans` of the spam bot's 9.84 GB file held 1.1 GB of free heap beside
1.5 GB in use at its readings' peak (glibc's mallinfo2, sampled as it ran); with all of this, it and `hosts` peak
at 2.2 GB against 2.4 GB with the first two alone, and the 20 GB benchmark's `scans` at 4.2 GB against 4.4 GB, in
the same time ([benchmarks/README.md](../../benchmarks/README.md#twenty-gigabytes)). A capture read whole never calls it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt(3) parameters (glibc's malloc.h)
_MADV_POPULATE_WRITE = 23  # madvise(2) advice (Linux 5.14+; older kernels refuse it: nothing happens)
_TRIM_LONG = 64 << 20  # free heap kept at its top once a long command has read its chunks (see above)
_PREFAULT_MAX = 256 << 20  # bytes of heap faulted in ahead, at most
_PREFAULT_BLOCK = 16 << 20  # malloc'd at a time to grow the heap (under the 32 MB threshold: from the heap)
_PREFAULT_STEP = 8 << 20  # faulted in per madvise call
_UNUSED_NUMPY = ("f2py", "testing")  # numpy submodules no command uses (see above)


def _reuse_freed_memory() -> bool:
    """glibc: blocks up to 32 MB from the heap, and the heap's free memory kept (see above). Elsewhere (no
    mallopt, or another allocator) nothing changes. Returns whether the settings were made."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def give_back_freed_memory() -> None:
    """glibc: the heap's free memory handed back to the system (malloc_trim(0)), and from then on at most
    `_TRIM_LONG` of it kept at the heap's top (see above). Elsewhere nothing."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_LONG)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _capture_bytes(args: list[str]) -> int:
    """The size of the capture a command line names: its first argument that is an existing file (0: none)."""
    for arg in args:
        if not arg.startswith("-") and os.path.isfile(arg):
            return os.path.getsize(arg)
    return 0


def _prefault_heap(nbytes: int) -> threading.Thread | None:
    """Grow the heap by about `nbytes`, hand it back to malloc (which keeps it: `_reuse_freed_memory` first),
    and fault its pages in from a background thread (see above), returned; None when there is nothing to do."""
    n_blocks = nbytes // _PREFAULT_BLOCK
    if not n_blocks:
        return None
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    blocks = [libc.malloc(_PREFAULT_BLOCK) for _ in range(n_blocks)]
    page = os.sysconf("SC_PAGE_SIZE")
    spans = [(-(-b // page) * page, (b + _PREFAULT_BLOCK) // page * page) for b in blocks if b]
    for b in reversed(blocks):
        libc.free(b)  # (ctypes' None for a failed malloc: free(NULL) does nothing)

    def fault_in() -> None:  # (ctypes lets go of the GIL in each call: the imports go on meanwhile)
        for lo, hi in spans:
            for a in range(lo, hi, _PREFAULT_STEP):
                libc.madvise(a, min(_PREFAULT_STEP, hi - a), _MADV_POPULATE_WRITE)

    thread = threading.Thread(target=fault_in, name="synlens-prefault", daemon=True)
    thread.start()
    return thread


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


def prepare(args: list[str]) -> None:
    """Make the settings above for a command whose arguments are `args`; then numpy may load (it is loaded
    here, to defer its unused submodules). The caller pauses the cyclic garbage collector first, and freezes
    the objects the imports made once the command's modules are loaded (`gc.freeze`)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    if _reuse_freed_memory():
        _prefault_heap(min(_capture_bytes(args), _PREFAULT_MAX))
    _defer_unused_numpy()
