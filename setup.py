"""The one build step pyproject.toml cannot declare: the optional compiled reader loops (analyzer/accel/_fast.c).

`optional=True`: where no C compiler is found the install still succeeds, and synlens reads captures with
its numpy code instead (the same results, slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("analyzer.accel._fast", ["analyzer/accel/_fast.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])])
