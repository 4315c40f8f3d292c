"""How outputs name a frame: its number, or "file:number" when the capture was several files.

The analysis numbers frames in the merged order of all the files it read (reading/merge.py); an investigator
checks a frame in Wireshark by opening its own file. So while an output is made for a capture of several files
(`naming(index)`), every frame an output names is that file's name and the frame's number in it: text and
HTML through `frame_text`, JSON and CSV through `with_labels` (their frame columns become such texts). For one
file nothing changes: frames are numbers, as Wireshark shows them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import pandas as pd

from ..reading.merge import FrameIndex

# Columns of the result tables that hold a frame, and those that hold a list of frames.
FRAME_COLUMNS = ("first_frame", "last_frame", "probe_frame", "reply_frame")
FRAME_LIST_COLUMNS = ("tool_frames", "frames", "evidence_frames")

_INDEX: ContextVar[FrameIndex | None] = ContextVar("synlens_frames", default=None)


@contextmanager
def naming(index: FrameIndex | None) -> Iterator[None]:
    """Outputs made inside name frames by `index` (None: by number)."""
    token = _INDEX.set(index)
    try:
        yield
    finally:
        _INDEX.reset(token)


def frame_text(frame: object) -> str:
    """One frame as outputs name it."""
    index = _INDEX.get()
    return str(int(frame)) if index is None else index.label(int(frame))


def labels(frames: np.ndarray) -> np.ndarray:
    """Frames (integers) as outputs name them, as an object array of texts (or the integers, for one file)."""
    index = _INDEX.get()
    if index is None:
        return frames
    file, local = index.locate(np.asarray(frames, np.int64))
    names = np.array([f"{name}:" for name in index.names], dtype=object)
    return names[file] + local.astype(str).astype(object)


def with_labels(table: pd.DataFrame) -> pd.DataFrame:
    """A result table with its frame columns as outputs name them (unchanged for one file)."""
    if _INDEX.get() is None or table is None:
        return table
    changed = {}
    for c in FRAME_COLUMNS:
        if c in table.columns:
            present = table[c].notna().to_numpy()
            values = np.full(len(table), None, dtype=object)
            values[present] = labels(table[c].to_numpy()[present].astype(np.int64))
            changed[c] = values
    for c in FRAME_LIST_COLUMNS:
        if c in table.columns:
            changed[c] = [None if not isinstance(v, (list, tuple, np.ndarray)) else
                          labels(np.asarray(v, np.int64)).tolist() for v in table[c]]
    return table.assign(**changed) if changed else table


def frame_list(frames: object) -> str | None:
    """Frames as a short list, "1, 2, 3 … 1994" (None: no list, or an empty one)."""
    values = [frame_text(f) for f in (frames if isinstance(frames, (list, tuple, np.ndarray)) else [])]
    if not values:
        return None
    return ", ".join(values[:-1]) + f" … {values[-1]}" if len(values) > 3 else ", ".join(values)


def probe_and_reply(probe: object, reply: object, arrow: str = "->") -> str | None:
    """The frames behind a port's state: its deciding probe and the reply to it ("14 -> 15"); None: no probe."""
    if probe is None or pd.isna(probe):
        return None
    return f"{frame_text(probe)} {arrow} {frame_text(reply)}" if reply is not None and pd.notna(reply) \
        else frame_text(probe)
