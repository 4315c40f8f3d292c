"""The two ways a capture can go wrong: unreadable (error) or damaged but partly readable (warning)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class CaptureError(Exception):
    """The file cannot be read as a capture. `str()` is one line naming the file and the problem."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # (pickled as made: a Dask worker's reaches the client)
        return type(self), (self.path, self.problem)


class UsageError(ValueError):
    """Options that cannot be carried out as given (a value that is wrong, or options that do not go together).
    `str()` is one line; the command line says it and exits 2."""


class NotEnoughMemory(MemoryError):
    """The captures' packets table would not fit in the memory the run may take (reading/memory.py): said before
    the system runs out. `str()` is one line; the command line says it, naming the captures, and exits 2."""


class CaptureWarning(UserWarning):
    """The capture is damaged; everything before the damage was read."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # (pickled as made: a Dask worker's reaches the client)
        return type(self), (self.path, self.problem)


@contextmanager
def capture_file_errors(path: str) -> Iterator[None]:
    """Turn the ways opening and reading a file fail into one-line `CaptureError`s naming the file."""
    try:
        yield
    except IsADirectoryError:
        raise CaptureError(path, "is a directory, not a capture file") from None
    except FileNotFoundError:
        raise CaptureError(path, "no such file") from None
    except PermissionError:
        raise CaptureError(path, "permission denied") from None
    except OSError as e:
        raise CaptureError(path, e.strerror or str(e)) from None


@contextmanager
def said_of(path: str, name: str) -> Iterator[None]:
    """Errors and warnings about the file `path` said of `name`, as the user named it (standard input is read
    from a spool file, and is "-" to the user)."""
    if path == name:
        yield
        return
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    except CaptureError as e:
        raise CaptureError(name if e.path == path else e.path, e.problem) from None
    finally:  # (said once the recording is over: said within it, they would be recorded again)
        for w in caught:
            if isinstance(w.message, CaptureWarning) and w.message.path == path:
                warnings.warn(CaptureWarning(name, w.message.problem), stacklevel=1)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
