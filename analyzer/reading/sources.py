"""What the user named → the capture files to read, in the order their packets were captured.

An input is a file, a directory (its files, recursively, in name order; hidden files and JSON files, such as
the sidecars synlens-agent writes beside its captures, are passed over), a glob pattern (``sensor-*.pcap.gz``, ``**`` for
subfolders), or ``-`` for a capture on standard input (spooled to a temporary file as it arrives, so that it is
read as any file is: a pipe from ``tcpdump -w -`` is never held in memory). Files are put in the order of their
first packet's time, not their names (rotated files named by a counter, or by another clock, still follow one
another; ties keep the order named); `reading/merge.py` interleaves files whose packets overlap in time.

A name that is no capture (no such file, a directory with none, a file of another kind) is one `CaptureError`
in `Sources.errors`; the others are read.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import CaptureError, CaptureWarning
from .formats import iter_records

STDIN = "-"
# Files in a directory passed over: JSON (synlens-agent's sidecars, capture.pcap.json, and truth files are JSON;
# a capture never is), and hidden files.
_SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class Source:
    """One capture file: `name` as outputs name it (as given, or the path under the directory given), `path` the
    file read (a spool file for standard input), its first packet's time (None: no packet, or not looked at:
    a capture of one file)."""

    name: str
    path: str
    first_ns: int | None


@dataclass(frozen=True)
class Sources:
    """The capture files to read, in capture order, and the names that were not captures."""

    files: tuple[Source, ...]
    errors: tuple[CaptureError, ...] = ()
    spool: tuple[str, ...] = field(default=(), repr=False)  # temporary files to remove when done

    def close(self) -> None:
        for path in self.spool:
            try:
                os.unlink(path)
            except OSError:
                pass


def sources(inputs: Sequence[str], stdin: object = None) -> Sources:
    """The captures `inputs` name (see the module), ordered by first packet; each name that is not one is an
    error in the result (CaptureError: one line naming it). `stdin`: the stream read for ``-`` (default: this
    process's standard input, as bytes)."""
    named: list[tuple[str, str]] = []
    errors: list[CaptureError] = []
    spool: list[str] = []
    for given in inputs:
        if given == STDIN:
            path = _spool(stdin if stdin is not None else sys.stdin.buffer)
            spool.append(path)
            named.append(("stdin", path))
        elif os.path.isdir(given):
            files = _directory(given)
            if not files:
                errors.append(CaptureError(given, "directory holds no capture file"))
            named += [(f, f) for f in files]
        elif not os.path.exists(given) and glob.has_magic(given):
            files = sorted(f for f in glob.glob(given, recursive=True) if os.path.isfile(f))
            if not files:
                errors.append(CaptureError(given, "no file matches this pattern"))
            named += [(f, f) for f in files]
        else:
            named.append((given, given))
    found: list[Source] = []
    seen: set[str] = set()
    several = len(named) > 1
    for name, path in named:
        real = os.path.realpath(path)
        if real in seen:  # (a file named twice, by a directory and a pattern: read once)
            continue
        seen.add(real)
        try:  # (one file needs no order: it is checked as it is read)
            found.append(Source(name, path, first_time(path) if several else None))
        except CaptureError as error:
            errors.append(error)
    # Capture order: by first packet's time (files without a packet last), ties in the order named.
    order = sorted(range(len(found)), key=lambda i: (found[i].first_ns is None, found[i].first_ns or 0, i))
    return Sources(tuple(found[i] for i in order), tuple(errors), tuple(spool))


def captures(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> Sources:
    """The captures one name or several name (as `sources`), or the first name that is none as a CaptureError:
    what the API takes, where the command line instead reports each such name and reads the rest."""
    found = sources([os.fspath(inputs)] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(i) for i in inputs])
    if found.errors:
        found.close()
        raise found.errors[0]
    return found


def sha256_of(path: str) -> str:
    """A file's SHA-256, in hex: how a report or an export names the exact capture it read."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def first_time(path: str) -> int | None:
    """The time of a capture's first packet (ns since 1970), None when it holds none. Raises CaptureError
    when the file is no capture; its damage is told when it is read, not here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaptureWarning)
        for records in iter_records(path, 1):
            return int(records.ts_ns[0]) if len(records) else None
    return None


def _directory(folder: str) -> list[str]:
    """A directory's files, recursively, in name order: hidden ones and capture sidecars passed over."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith(".") or f.endswith(_SIDECAR_SUFFIX):
                continue
            out.append(os.path.join(root, f))
    return out


def _spool(stream: object) -> str:
    """Standard input copied to a temporary file as it arrives; its path."""
    fd, path = tempfile.mkstemp(prefix="synlens-stdin-", suffix=".cap")
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(stream, out, 1 << 20)
    return path

