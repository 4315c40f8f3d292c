"""The one build step pyproject.toml cannot declare: the optional compiled code behind analyzer/accel/ (the
reader's per-record loops, analyzer/accel/_reader.c; keys and their order, analyzer/accel/_sort.c).

`optional=True`: where no C compiler is found the install still succeeds, and synlens runs the numpy code of
analyzer/accel/ instead (the same results, slower).
"""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
setup(ext_modules=[
    Extension(f"analyzer.accel.{name}", [f"analyzer/accel/{name}.c"], depends=["analyzer/accel/_buffers.h"],
              optional=True, extra_compile_args=FLAGS)
    for name in ("_reader", "_sort")
])
