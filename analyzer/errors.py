"""The two ways a capture can go wrong: unreadable (error) or damaged but partly readable (warning)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class CaptureError(Exception):
    """The file cannot be read as a capture. `str()` is one line naming the file and the problem."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class CaptureWarning(UserWarning):
    """The capture is damaged; everything before the damage was read."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


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
