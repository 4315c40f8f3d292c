"""One fuzz case, checked in process: the reader (compiled and numpy, compared), every analysis stage of the API,
and every command's renderers, as a user would meet them.

What must hold (issue 19): the API raises `CaptureError` or warns `CaptureWarning`, nothing else; a command ends
with its output (valid JSON, CSV, HTML) or a one-line error naming the file, exit 2; the compiled and the numpy
reader give the same packets table (and the same warnings), and the matcher the same probes table. Anything
else is a `Finding`, with a signature that names the fault, not the case: the exception's type and the
innermost analyzer line it came from, the warning's category and line, what disagreed. Crashes, sanitizer
reports and hangs are seen from outside the process (tests/fuzz/campaign.py).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import mmap
import os
import random
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import analyzer
from analyzer import accel as compiled
from analyzer.analysis.families import METHODS
from analyzer.cli import main as cli_main
from analyzer.errors import CaptureError, CaptureWarning
from analyzer.reading import formats as capture
from analyzer.reading import packets

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Finding:
    kind: str  # traceback, warning, differential, command, crash, sanitizer, hang
    signature: str  # the fault: the same for every case that meets it
    stage: str  # where this case met it
    detail: str  # the traceback, the message, what differed

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "signature": self.signature, "stage": self.stage, "detail": self.detail}


def _where(filename: str) -> str:
    try:
        return str(Path(filename).resolve().relative_to(REPO))
    except ValueError:
        return Path(filename).name


def exception_signature(exc: BaseException) -> str:
    """The exception's type and the innermost line of synlens's own code it passed through."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/analyzer/" in f.filename] or frames
    if not ours:
        return name
    f = ours[-1]
    return f"{name} at {_where(f.filename)}:{f.lineno} in {f.name}"


class _Stages:
    """Runs the stages of one case, each under its own watch, and collects the findings."""

    def __init__(self, on_stage: Callable[[str], None]) -> None:
        self.findings: list[Finding] = []
        self.on_stage = on_stage

    @contextlib.contextmanager
    def stage(self, name: str, *, allow_error: bool = False) -> Iterator[list]:
        """Watch a stage: an exception other than CaptureError (where `allow_error`), and any warning other
        than a CaptureWarning, is a finding. Yields the list the CaptureWarnings are put in."""
        self.on_stage(name)
        kept: list[warnings.WarningMessage] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield kept
            except CaptureError:
                if not allow_error:
                    self.add("traceback", f"CaptureError outside the reader, in {name}", name, traceback.format_exc())
                raise
            except Exception as e:  # noqa: BLE001  (every other exception is what the fuzzer looks for)
                self.add("traceback", exception_signature(e), name, traceback.format_exc())
                raise _StageFailed from None
            finally:
                for w in caught:
                    if issubclass(w.category, CaptureWarning):
                        kept.append(w)
                    else:
                        self.add("warning", f"{w.category.__name__} at {_where(w.filename)}:{w.lineno}", name,
                                 str(w.message))

    def add(self, kind: str, signature: str, stage: str, detail: str) -> None:
        self.findings.append(Finding(kind, signature, stage, detail[-4000:]))


class _StageFailed(Exception):
    """A stage raised (its finding is recorded): the stages that need its result are skipped."""


@contextlib.contextmanager
def _reader(fast: object) -> Iterator[None]:
    saved = compiled.COMPILED
    compiled.COMPILED = fast
    try:
        yield
    finally:
        compiled.COMPILED = saved


def _read_both(s: _Stages, path: str) -> pd.DataFrame | None:
    """The capture read by the compiled and the numpy reader from one exact-size copy of its bytes (so that a
    read past its end is a read past a heap block: AddressSanitizer sees it), compared. Returns the compiled
    reader's table, or None when the capture cannot be read (CaptureError)."""
    results = []
    with s.stage("read", allow_error=True):
        try:
            raw, compressed = capture._load(path)
        except CaptureError as e:
            raw, compressed, load_error = None, False, str(e)
        else:
            load_error = None
            copy = bytes(raw)
            if isinstance(raw, mmap.mmap):
                raw.close()
            del raw
    for name, fast in (("read compiled", compiled.COMPILED), ("read numpy", compiled.NONE)):
        try:
            with s.stage(name, allow_error=True) as caught, _reader(fast):
                if load_error is not None:
                    raise CaptureError(path, load_error.split(": ", 1)[-1])
                table = packets.decode(capture.records_of(path, copy, compressed))
                results.append(("ok", table, [str(w.message) for w in caught]))
        except CaptureError as e:
            results.append(("error", str(e), []))
        except _StageFailed:
            return None
    if compiled.COMPILED.reader is None:
        return results[0][1] if results[0][0] == "ok" else None
    (kind_a, a, wa), (kind_b, b, wb) = results
    if kind_a != kind_b:
        s.add("differential", f"reader: compiled {kind_a}, numpy {kind_b}", "read", f"{a!s:.2000}\n---\n{b!s:.2000}")
    elif kind_a == "error" and a != b:
        s.add("differential", "reader: different errors", "read", f"{a}\n---\n{b}")
    elif kind_a == "ok":
        if wa != wb:
            s.add("differential", "reader: different warnings", "read", f"{wa}\n---\n{wb}")
        _compare("packets", s, a, b)
    return a if kind_a == "ok" else None


def _compare(what: str, s: _Stages, a: pd.DataFrame, b: pd.DataFrame) -> None:
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        s.add("differential", f"{what}: shape", what, f"{a.shape} {list(a.columns)}\n---\n{b.shape} {list(b.columns)}")
        return
    differ = [c for c in a.columns if not a[c].equals(b[c])]
    if differ:
        rows = [f"{c}: {a[c][a[c].ne(b[c]).fillna(True)].head(3).tolist()} vs "
                f"{b[c][a[c].ne(b[c]).fillna(True)].head(3).tolist()}" for c in differ[:5]]
        s.add("differential", f"{what}: column {differ[0]}", what, "\n".join(rows))
    elif a.attrs != b.attrs:
        s.add("differential", f"{what}: attrs", what, f"{a.attrs}\n---\n{b.attrs}")


def _api(s: _Stages, table: pd.DataFrame, rng: random.Random) -> None:
    """Every stage of the public API on the packets table (the compiled reader's)."""
    with s.stage("match"):
        probes = analyzer.match(table)
    if compiled.COMPILED.sort is not None:
        with s.stage("match numpy"), _reader(compiled.NONE):
            _compare("match", s, probes, analyzer.match(table))
    method, which = rng.choice(METHODS), rng.choice(("syn", "any"))
    with s.stage("rtt"):
        analyzer.rtt(probes, probes=which)
    with s.stage("families"):
        analyzer.families(probes, method=method, probes=which)
    with s.stage("pairwise"):
        analyzer.pairwise(probes, probes=which)
    with s.stage("signal_families"):
        analyzer.signal_families(table, probes, method=method, probes=which)
    with s.stage("scans"):
        found, states = analyzer.scans(table, probes)
    with s.stage("hosts"):
        analyzer.hosts(table, probes, states, found)


def _command(s: _Stages, argv: list[str], readable: bool, html: Path | None = None) -> None:
    """One command as a user runs it (in process): exit 0 with output in its format, or exit 2 with one line
    `synlens: error: PATH: …` when the reader cannot read the capture; every other stderr line a warning or a
    note (`rtt` says what the capture cannot show)."""
    name = "command " + " ".join(a for a in argv if not a.startswith("/"))
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.StringIO()
    with s.stage(name), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(argv)
    out.flush()
    text = out.buffer.getvalue().decode("utf-8", "replace")
    lines = err.getvalue().splitlines()
    errors = [line for line in lines if line.startswith("synlens: error: ")]
    others = [line for line in lines if not line.startswith(("synlens: warning: ", "synlens: error: ", "synlens: note: "))
              and not (html is not None and line == f"wrote {html}")]
    if others:
        s.add("command", f"{argv[0]}: stderr line {others[0].split(':')[0:2]}", name, "\n".join(lines[:20]))
    if code == 2:
        if len(errors) != 1 or not errors[0].startswith(f"synlens: error: {argv[1]}: "):
            s.add("command", f"{argv[0]}: exit 2 without one error line", name, "\n".join(lines[:20]))
        elif readable and "not enough memory" not in errors[0]:
            s.add("command", f"{argv[0]}: exit 2 on a capture the API reads", name, errors[0])
        return
    if code != 0 or errors:
        s.add("command", f"{argv[0]}: exit {code}", name, "\n".join(lines[:20]))
        return
    fmt = argv[argv.index("--format") + 1] if "--format" in argv else "table"
    try:
        if fmt == "json":
            json.loads(text)
        elif fmt == "csv":
            list(csv.reader(io.StringIO(text)))
        elif html is not None:
            page = html.read_text(encoding="utf-8")
            if not page.rstrip().endswith("</html>"):
                raise ValueError("the report does not end with </html>")
    except ValueError as e:
        s.add("command", f"{argv[0]}: invalid {fmt if html is None else 'html'} output", name, f"{e}\n{text[:1000]}")


def command_findings(argv: list[str], readable: bool = True, html: Path | None = None) -> list[Finding]:
    """One command's findings (see `_command`): exit status, stderr and output checked."""
    s = _Stages(lambda name: None)
    with contextlib.suppress(_StageFailed):
        _command(s, argv, readable, html)
    return s.findings


@dataclass(frozen=True)
class Outcome:
    findings: list[Finding]  # empty: everything held
    readable: bool  # the reader read the capture (else it refused it with a CaptureError, as it should some)


def check(data: bytes, workdir: Path, *, seed: int = 0, report: bool = False,
          on_stage: Callable[[str], None] = lambda name: None) -> Outcome:
    """Check one case (a capture's bytes). `seed` picks the commands' options (format, method, probes) for this
    case; `report`: the HTML report too (slower)."""
    rng = random.Random(seed)
    path = workdir / "case.bin"
    path.write_bytes(data)
    s = _Stages(on_stage)
    table = None
    with contextlib.suppress(_StageFailed):
        table = _read_both(s, str(path))
    if table is not None:
        with contextlib.suppress(_StageFailed, CaptureError):
            _api(s, table, rng)
    formats = ("table", "json", "csv")
    commands = [["rtt", str(path), "--format", rng.choice(formats)],
                ["scans", str(path), "--format", rng.choice(formats)],
                ["hosts", str(path), "--format", rng.choice(formats)]]
    if rng.random() < 0.3:
        commands[0] += rng.choice((["--signals", "rtt"], ["--method", rng.choice(METHODS)], ["--probes", "any"]))
    for argv in commands:
        with contextlib.suppress(_StageFailed):
            _command(s, argv, table is not None)
    if report:
        html = workdir / "report.html"
        with contextlib.suppress(_StageFailed):
            _command(s, ["report", str(path), "-o", str(html)], table is not None, html)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(html)
    return Outcome(s.findings, table is not None)
