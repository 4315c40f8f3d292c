"""The two ways a capture can go wrong: unreadable (error) or damaged but partly readable (warning)."""

from __future__ import annotations


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
