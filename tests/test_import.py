"""The package imports lazily (analyzer/__init__.py) and the command sets its process up before numpy,
pandas and scipy load (analyzer/__main__.py)."""

import os
import subprocess
import sys


def _run(code: str, env: dict | None = None) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


def test_importing_the_package_loads_no_library():
    code = "import sys, analyzer; print(sorted(m for m in ('numpy', 'pandas', 'scipy') if m in sys.modules))"
    assert _run(code) == "[]"


def test_api_names_are_the_functions_whichever_module_loads_first():
    code = """
import types, analyzer.analysis.match, analyzer.analysis.scans  # the submodules first: the import binds them to the package
import analyzer
from analyzer import families, hosts, match, scans, rtt, read
from analyzer.analysis.match import match as match_function
functions = (families, hosts, match, scans, rtt, read)
print(sorted(analyzer.__all__) == sorted(analyzer._API), match is match_function,
      analyzer.match is match_function,
      all(callable(f) and not isinstance(f, types.ModuleType) for f in functions),
      sorted(set(analyzer.__all__) - set(dir(analyzer))))
"""
    assert _run(code) == "True True True True []"


def test_unknown_names_raise_attribute_error():
    assert _run("import analyzer\ntry:\n    analyzer.nothing\nexcept AttributeError as e:\n    print(e)") == (
        "module 'analyzer' has no attribute 'nothing'")


def test_the_command_sets_up_its_process_before_the_libraries_load():
    """What cli.run (a stand-in here) finds: numpy's BLAS loaded with one thread (two threads in all, when the
    environment asks for two), numpy's huge-page advice off (on when the environment asks for it), the
    collector frozen out of the imports' objects and running again."""
    code = """
import gc, os, sys, types
def run():
    import numpy  # (loads numpy's OpenBLAS, which starts its worker threads now)
    from numpy._core.multiarray import _get_madvise_hugepage
    print(len(os.listdir("/proc/self/task")), _get_madvise_hugepage(), gc.get_freeze_count() > 0, gc.isenabled())
fake = types.ModuleType("analyzer.cli")
fake.run = run
sys.modules["analyzer.cli"] = fake
from analyzer.__main__ import main
main()
"""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "NUMPY_MADVISE_HUGEPAGE")}
    assert os.cpu_count() >= 2  # (else OpenBLAS would start one thread whatever the command did)
    assert _run(code, env) == "1 False True True"
    assert _run(code, env | {"OPENBLAS_NUM_THREADS": "2"}) == "2 False True True"
    assert _run(code, env | {"NUMPY_MADVISE_HUGEPAGE": "1"}) == "1 True True True"


# glibc's mallinfo2 in a test's program: `libc.mallinfo2()` gives the heap's figures (fordblks: free bytes;
# keepcost: what its top could give back).
_MALLINFO2 = """class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
"""


def test_the_command_keeps_freed_memory_in_the_heap():
    """After the command's malloc settings, a freed 10 MB array stays in the heap for the next one (glibc's
    mallinfo2: free heap bytes); without them glibc maps it apart and gives it back when freed."""
    code = """
import ctypes, sys
import numpy as np
from analyzer.accel.tuning import _reuse_freed_memory
""" + _MALLINFO2 + """
if sys.argv[1] == "set":
    _reuse_freed_memory()
a = np.ones(10 << 20, np.uint8)
del a
print(libc.mallinfo2().fordblks >= 10 << 20)
"""
    out = {how: subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True,
                               check=True).stdout.strip() for how in ("set", "default")}
    assert out == {"set": "True", "default": "False"}


def test_a_chunked_read_gives_the_freed_memory_back():
    """With the command's malloc settings, 256 MB of arrays made and freed stay resident in the heap (kept for
    reuse); `give_back_freed_memory`, which a capture read in chunks calls once read, hands them back."""
    code = """
import numpy as np
from analyzer.accel.tuning import _reuse_freed_memory, give_back_freed_memory
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
_reuse_freed_memory()
held = [np.ones(16 << 20, np.uint8) for _ in range(16)]  # (under 32 MB each: from the heap)
held.append(np.ones(1, np.uint8))  # (a block above them: the freed ones are not the heap's top)
del held[:16]
kept = resident()
give_back_freed_memory()
print(kept - resident() >= 200 << 20)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True"


def test_after_a_chunked_read_the_heap_keeps_little_free_memory_at_its_top():
    """With the command's malloc settings, 192 MB of arrays made and freed stay at the heap's top (mallinfo2's
    keepcost: what the top could give back), kept for reuse; once `give_back_freed_memory` has been called (a
    capture read in chunks, then after each of its readings), the same arrays made and freed are given back
    beyond 64 MB, as the readings of millions of probes make and free them."""
    code = """
import ctypes
import numpy as np
from analyzer.accel.tuning import _reuse_freed_memory, give_back_freed_memory
""" + _MALLINFO2 + """
def made_and_freed():
    held = [np.ones(16 << 20, np.uint8) for _ in range(12)]  # (under 32 MB each: from the heap)
    del held[:]
    return libc.mallinfo2().keepcost
_reuse_freed_memory()
kept = made_and_freed()
give_back_freed_memory()
print(kept >= 160 << 20, made_and_freed() <= 64 << 20)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True True"


def test_the_command_leaves_numpys_unused_submodules_unloaded_until_used():
    """scipy.special reads every numpy attribute (its array-API layer), which would import numpy.f2py and
    numpy.testing; in the command they are lazy modules: not run by that read, whole on first use."""
    code = """
import sys, types
def run():
    import numpy, scipy.special
    loaded = sorted(m for m in ("numpy.f2py.crackfortran", "unittest") if m in sys.modules)
    numpy.testing.assert_equal(1, 1)
    print(loaded, "unittest" in sys.modules, callable(numpy.f2py.crackfortran.crackfortran))
fake = types.ModuleType("analyzer.cli")
fake.run = run
sys.modules["analyzer.cli"] = fake
from analyzer.__main__ import main
main()
"""
    assert _run(code) == "[] True True"


def test_the_command_faults_heap_pages_in_ahead_of_use():
    """With the command's heap set-up (sized here as for a 64 MB capture), 24 arrays of 1 MB made afterwards
    find their pages faulted in already: their writes take next to no page faults in the thread that makes
    them, where they take one a page (6,144) without. (Arrays of 4 MB and more numpy advises into huge pages,
    where the kernel gives them.)"""
    code = """
import resource, sys
import numpy as np
from analyzer.accel.tuning import _prefault_heap, _reuse_freed_memory
assert _reuse_freed_memory()
if sys.argv[1] == "set":
    _prefault_heap(64 << 20).join()
before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
arrays = [np.ones(1 << 20, np.uint8) for _ in range(24)]
print(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
"""
    faults = {how: int(subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True,
                                      check=True).stdout) for how in ("set", "default")}
    assert faults["default"] >= 6000 and faults["set"] < 200, faults


def test_the_heap_set_up_is_sized_by_the_capture_the_command_names(tmp_path):
    from analyzer.accel.tuning import _capture_bytes

    capture = tmp_path / "c.pcap"
    capture.write_bytes(b"x" * 5000)
    assert _capture_bytes(["rtt", "--format", "json", str(capture)]) == 5000
    assert _capture_bytes(["rtt", str(capture), "--target", "10.0.0.1"]) == 5000
    assert _capture_bytes(["rtt", str(tmp_path / "missing.pcap")]) == 0
    assert _capture_bytes(["--help"]) == 0
