"""One pipeline: a capture read into the packets table, its probes matched, then the analyses asked for.

Every entry point runs it: each `synlens` command (analyzer.cli), the HTML report (render/report.py) and the
API (`analyzer.analyze`). The analyses are declared once, as data (`STEPS`): what each takes from the steps
before it, and which columns of the packets and probes tables it reads. From that the pipeline knows, for
the analyses asked for,

- which columns to read and which probe columns to match (a big capture's whole table is twice its size),
- when each table may go: the columns no later step reads are let go after matching, and a table no later
  step and no caller needs is let go as soon as the last step that needs it is done.

    read → packets → match → probes → (targets kept) → families | signals | scans → hosts

`analyze` returns an `Analysis` (frozen): the results asked for, the counts every output reports, the reader's
warnings (passed on as warnings too) and the notes that say what the capture cannot show.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import pandas as pd

from .accel.tuning import give_back_freed_memory
from .analysis import hosts as _hosts
from .analysis import scans as _scans
from .analysis import signals as _signals
from .analysis import stats as _stats
from .analysis.buckets import DEFAULT_BUDGET, Buckets, in_target_order
from .analysis.chunked import ChunkedMatch, Disordered, Matched, joined, match_in_slices
from .analysis.families import DEFAULT_CONFIDENCE, MIN_DIFF_US, MIN_RATIO, families
from .analysis.match import DEFAULT_WINDOW_S, match_columns
from .analysis.screen import PACKET_FIELDS as SCREEN_FIELDS
from .analysis.screen import PROBE_FIELDS as SCREEN_PROBE_FIELDS
from .analysis.screen import Screen, Tallies
from .errors import CaptureError, CaptureWarning, UsageError
from .reading.filters import EVERYTHING, Filter
from .reading.many import CHUNK_RECORDS, decode_nothing, iter_sources, read_sources, stream_attrs
from .reading.memory import MemoryGuard
from .reading.merge import DEDUP_WINDOW_NS, FrameIndex, in_frame_order
from .reading.packets import read
from .reading.sources import Source, Sources, captures, first_time, sources
from .reading.stream import Reading, Stream


@dataclass(frozen=True)
class Options:
    """How a capture is read and analysed: the `synlens` commands' options, with their defaults."""

    engine: str = "native"  # native: synlens's reader; tshark: Wireshark's dissectors (pyshark)
    window_s: float = DEFAULT_WINDOW_S  # reply window: later replies are unsolicited, the probe lost
    targets: tuple[str, ...] = ()  # only the probes to these addresses (none: every probe)
    method: str = "robust"  # families: robust, qscan, qscan-table
    confidence: float | None = None  # of the family tests (None: the method's default)
    probes: str = "syn"  # probes to draw RTTs from: bare SYNs, or any
    min_ratio: float = MIN_RATIO  # robust: floors closer than this ratio are one family
    min_diff_us: float = MIN_DIFF_US  # robust: floors closer than this many µs are one family
    keep: Filter = EVERYTHING  # packets analysed: a time range, addresses, ports (reading/filters.py)
    dedup_ns: int = DEDUP_WINDOW_NS  # frames of another file within this of an identical one are its copies
    chunk: int | None = None  # records matched at a time (0: the capture whole; None: chunks above CHUNKED_ABOVE)
    scheduler: str | None = None  # read and match on this Dask scheduler's cluster (analyzer/distributed.py)
    workers: int = 0  # … or on a local cluster of this many processes (0: in this process)
    buffer_size: int = DEFAULT_BUDGET  # bytes of probes held when matched in chunks (beyond: on disk by target)
    max_memory: int | None = None  # bytes a run that reads the packets table whole may take (None: what is available)

    @property
    def family_options(self) -> dict[str, object]:
        return dict(method=self.method, confidence=self.confidence, probes=self.probes, min_ratio=self.min_ratio,
                    min_diff_us=self.min_diff_us)

    @property
    def family_confidence(self) -> float:
        return self.confidence or DEFAULT_CONFIDENCE[self.method]


@dataclass(frozen=True)
class Step:
    """One analysis: the results it takes (`needs`, by name: packets, probes or an earlier step), the packets
    and probe columns it reads (None: all of them), and the function that runs it on a `_Run`."""

    name: str
    needs: tuple[str, ...]
    packet_columns: tuple[str, ...] | None
    probe_columns: tuple[str, ...] | None
    run: Callable[[_Run], object]
    at_replies: bool = False  # reads the packets table only at its probes' replies: matching may go by chunks
    # Reads the packets table only at the rows a screen keeps, and what it counts of the others (analysis/screen.py):
    # matching may go by chunks, the screen keeping those rows.
    screened: bool = False
    # Made per target (a target's result reads only its probes): the result of the whole from the results of
    # buckets of targets (analysis/buckets.py), so that the probes need not be held all at once. None: not so.
    by_target: Callable[[list], object] | None = None


@dataclass
class _Run:
    """A pipeline's state while it runs: the results so far (each let go once no one needs it) and its notes."""

    options: Options
    results: dict[str, object]
    notes: list[str] = field(default_factory=list)
    capture: str = ""


def _rtt_note(run: _Run) -> None:
    probes = run.results["probes"]
    if run.options.probes == "syn" and len(probes) and _stats.select_probes(probes, "syn").empty:
        run.notes.append(f"no bare SYN probe in {run.capture} (its probes carry other flags, or are not TCP): no RTT "
                         "to report; --probes any draws RTTs from every probe")


def _families(run: _Run) -> pd.DataFrame:
    _rtt_note(run)
    return families(run.results["probes"], **run.options.family_options)


def _signals_step(run: _Run) -> tuple[pd.DataFrame, pd.DataFrame]:
    _rtt_note(run)
    return _signals.signal_families(run.results["packets"], run.results["probes"], **run.options.family_options)


def _scans_step(run: _Run) -> _scans.ScanResult:
    return _scans.scans(run.results["packets"], run.results["probes"])


def _hosts_step(run: _Run) -> pd.DataFrame:
    result = run.results["scans"]
    return _hosts.hosts(run.results["packets"], run.results["probes"], result.states, result.scans,
                        run.results.get("let_go"))


# The analyses, in the order they run. `families`: RTT families alone (qscan's meaning); `signals`: families
# from RTT, TTL, TCP stack, timestamp clock and IP ID, with the evidence that decided (ports, families).
STEPS = {step.name: step for step in (
    Step("scans", ("packets", "probes"), _scans.PACKET_FIELDS, _scans.PROBE_FIELDS, _scans_step, screened=True),
    Step("hosts", ("packets", "probes", "scans"), _hosts.PACKET_FIELDS, _hosts.PROBE_FIELDS, _hosts_step,
         screened=True),
    Step("families", ("probes",), (), _stats.PROBE_FIELDS, _families, at_replies=True, by_target=in_target_order),
    Step("signals", ("packets", "probes"), _signals.REPLY_FIELDS, _stats.PROBE_FIELDS, _signals_step, at_replies=True,
         by_target=lambda results: tuple(in_target_order(list(tables)) for tables in zip(*results))),
)}
_TESTS_RTT = ("families", "signals")  # steps that test RTTs (scipy.special, loaded while the capture is read)
CHUNKED_ABOVE = 2 << 30  # bytes of captures above which steps that read only replies match a chunk at a time
PART_RECORDS = 1 << 18  # records of a pcap read by one task on a Dask cluster (--chunk: as many as asked)


@dataclass(frozen=True)
class Analysis:
    """A capture's analysis: the results of the steps asked for (None for the others), the tables kept, the
    counts every output reports, the reader's warnings and the pipeline's notes."""

    capture: str  # the capture's name; several: their names, comma-separated
    options: Options
    packet_count: int  # packets read
    malformed: int  # packets whose headers were inconsistent (kept with what could be decoded)
    probes_matched: int  # probes answered (after the targets asked for are kept)
    unsolicited_replies: int  # replies no probe in the capture explains
    format: str  # pcap, pcapng, … (the reader's)
    warnings: tuple[str, ...]  # the reader's: where the capture is damaged, and what was read
    notes: tuple[str, ...]  # what the capture cannot show, said instead of claimed
    packets: pd.DataFrame | None = None  # kept only when asked for
    probes: pd.DataFrame | None = None  # kept only when asked for
    families: pd.DataFrame | None = None  # `families`: per port, RTT statistics and family
    signals: tuple[pd.DataFrame, pd.DataFrame] | None = None  # `signals`: (ports, families with evidence)
    scans: _scans.ScanResult | None = None
    hosts: pd.DataFrame | None = None
    captures: tuple[str, ...] = ()  # the files read, in capture order
    paths: tuple[tuple[str, str], ...] = ()  # (name, path) of each: a spool file for standard input
    frames: FrameIndex | None = None  # several files: each frame's file and number there


def _read(found: Sources, options: Options, columns: tuple[str, ...] | None,
          reading: Callable[[Reading], None] | None = None, guard: MemoryGuard | None = None) -> pd.DataFrame:
    """The packets table of the captures found (their spool files removed once read), read only while `guard`
    (reading/memory.py) projects that it will fit."""
    try:
        if options.engine == "tshark":
            if len(found.files) != 1 or not options.keep.everything:
                raise UsageError("--engine tshark reads one capture, unfiltered (no --since, --until, --host, --net "
                                 "or --port): use the native engine for several captures or filters")
            return read(found.files[0].path, engine="tshark", columns=columns)
        told = reading if guard is None else guard if reading is None else _both(guard, reading)
        return read_sources(found, columns=columns, keep=options.keep, dedup_ns=options.dedup_ns, progress=told)
    finally:
        found.close()


def _both(first: Callable[[Reading], None], then: Callable[[Reading], None]) -> Callable[[Reading], None]:
    def told(reading: Reading) -> None:
        first(reading)
        then(reading)
    return told


def _counts(packets: int, attrs: dict[str, object]) -> dict[str, object]:
    """The counts every output reports, of the packets read and the reader's attributes (`stream_attrs`)."""
    return dict(packet_count=packets, malformed=attrs.get("malformed", 0), format=str(attrs.get("format", "")),
                frames=attrs.get("sources"))


def _readers(chosen: list[Step], verb: tuple[str, str] = ("read", "reads")) -> str:
    """The commands whose steps read the packets table whole (or hold what `verb` says), as the memory error
    names them."""
    names = list(dict.fromkeys("rtt" if s.name in _TESTS_RTT else s.name for s in chosen))
    if not names:  # (no step: the tables kept are what the run is for)
        return f"this run {verb[1]}"
    return f"{', '.join(names[:-1])} and {names[-1]} {verb[0]}" if len(names) > 1 else f"{names[0]} {verb[1]}"


def _chunk_records(found: Sources, options: Options, chosen: list[Step], keep: frozenset[str]) -> int:
    """Records matched at a time (0: the capture whole): chunks when every step reads the packets only at
    their replies, or every step only at the rows a screen keeps, and no whole table is kept, and the captures
    are bigger than CHUNKED_ABOVE (or as asked)."""
    if options.engine != "native" or keep & {"packets", "probes"} or not chosen or not (
            all(s.at_replies for s in chosen) or all(s.screened for s in chosen)):
        return 0
    if options.chunk is not None:
        return options.chunk
    return CHUNK_RECORDS if sum(os.path.getsize(f.path) for f in found.files) > CHUNKED_ABOVE else 0


def _reply_columns(chosen: list[Step]) -> list[str]:
    """The packets columns steps that read the packets only at their probes' replies read there."""
    return [c for s in chosen for c in s.packet_columns or ()]


def _in_chunks(found: Sources, options: Options, m: ChunkedMatch, records: int,
               reading: Callable[[Reading], None] | None, take: Callable[[Iterable[Matched]], None]
               ) -> tuple[dict[str, object], dict[str, object]] | None:
    """The captures fed to `m` `records` at a time, each round's parts given to `take` as they are made: the
    packets table's attrs and the counts, or None when the capture's clock steps back too far for chunks (it
    must be read whole: `found` is left open for that)."""
    stream = Stream.of(found.files, reading)
    count = 0
    try:
        for chunk in iter_sources(found, stream, columns=m.packet_columns(), keep=options.keep,
                                  dedup_ns=options.dedup_ns, chunk=records):
            count += len(chunk)
            take(m.feed(chunk))
            del chunk  # (not held here while the next is read)
        give_back_freed_memory()  # (the chunks' arrays, before what is kept of them is joined)
        take(m.finish())
    except Disordered:
        return None
    found.close()
    attrs = stream_attrs(found.files, stream)
    return attrs, _counts(count, attrs)


def _read_chunked(found: Sources, options: Options, chosen: list[Step], probe_columns: set[str] | None,
                  records: int, reading: Callable[[Reading], None] | None
                  ) -> tuple[pd.DataFrame | None, pd.DataFrame | _ByTarget, dict[str, object]] | None:
    """The captures read and matched a chunk at a time (analysis/chunked.py): the packets the steps read (the
    replies), the probes table and the counts; past `options.buffer_size`, the probes and replies in buckets of
    targets on disk instead (analysis/buckets.py: `_ByTarget`, analysed a bucket at a time). None when the
    capture's clock steps back too far for chunks (it must be read whole: `found` is left open for that)."""
    reply_columns = _reply_columns(chosen)
    m = ChunkedMatch(window_s=options.window_s, columns=probe_columns, reply_columns=reply_columns or None,
                     rows=min(records, 1 << 16))
    kept = Buckets(options.buffer_size)
    # (the memory the run may take, as reading begins: each bucket of targets past the buffer is checked before read)
    guard = MemoryGuard.of(options.max_memory, _readers(chosen, ("hold", "holds")), "a target's probes together")

    def add(parts: Iterable[Matched]) -> None:
        for part in parts:
            kept.add(part)

    done = _in_chunks(found, options, m, records, reading, add)
    if done is None:
        kept.close()
        return None
    counts = done[1]
    if kept.spilled:
        checked = None if guard is None else partial(guard.before_bucket, steps=tuple(s.name for s in chosen))
        return (None, _ByTarget(kept, m, bool(reply_columns), checked),
                dict(counts, unsolicited_replies=m.unsolicited_replies))
    probes, replies = [p for p, _ in kept.held], [r for _, r in kept.held]
    kept.close()
    packets = None
    if reply_columns:  # (the list let go as soon as it is joined: the parts and the whole are not held twice)
        packets = in_frame_order(replies) if replies else decode_nothing(list(m.reply_columns))
        del replies[:]
    return packets, joined(probes, m), counts


def _read_screened(found: Sources, options: Options, chosen: list[Step], probe_columns: set[str] | None,
                   records: int, reading: Callable[[Reading], None] | None
                   ) -> tuple[tuple[pd.DataFrame, pd.DataFrame, dict[str, object]], Tallies] | None:
    """The captures read and matched a chunk at a time, the packets screened as the matcher lets them go
    (analysis/screen.py): the rows the steps read, the probes table, the counts, and the tallies of the packets
    let go. None when the capture's clock steps back too far for chunks (`found` is left open to read it whole)."""
    columns = list(dict.fromkeys(("frame", *(c for s in chosen for c in s.packet_columns or ()))))
    m = ChunkedMatch(window_s=options.window_s, rows=min(records, 1 << 16),
                     columns=None if probe_columns is None else {*probe_columns, *SCREEN_PROBE_FIELDS},
                     passing=dict.fromkeys((*columns, *SCREEN_FIELDS)))
    screen, probes = Screen(columns), []

    def screened(parts: Iterable[Matched]) -> None:
        for part in parts:
            screen.given(part.probes)
            probes.append(part.probes)
        for passed in m.passed():
            screen.add(passed)

    guard = MemoryGuard.of(options.max_memory, _readers(chosen, ("hold", "holds")),
                           "their probes and the packets' rows their readings take")
    done = _in_chunks(found, options, m, records, reading, screened)
    if done is None:
        return None
    attrs, counts = done
    packets, let_go = screen.finish()
    give_back_freed_memory()  # (the rows kept of each chunk, now joined, before the readings)
    packets = decode_nothing(columns) if packets is None else packets
    packets.attrs.update(attrs)
    probes = joined(probes, m)
    if guard is not None:
        guard.before_steps(len(packets), len(probes), tuple(s.name for s in chosen), _hosts.SLICE_ROWS)
    return (packets, probes, counts), let_go


@dataclass(frozen=True)
class _ByTarget:
    """Probes matched a chunk at a time and kept on disk by buckets of targets: each bucket's (packets at its
    replies, or None; probes), joined as the whole capture's would be, one bucket at a time."""

    buckets: Buckets
    m: ChunkedMatch
    replies: bool  # the steps read the packets at the replies
    before: Callable[[int], None] | None = None  # told each bucket's bytes on disk before it is read (a memory check)

    def __iter__(self) -> Iterator[tuple[pd.DataFrame | None, pd.DataFrame]]:
        with self.buckets:
            for parts in self.buckets.buckets(self.before):
                packets = in_frame_order([r for _, r in parts]) if self.replies else None
                probes = joined([p for p, _ in parts], self.m)
                parts.clear()
                yield packets, probes


def _on_cluster(found: Sources, options: Options, chosen: list[Step], packet_columns: tuple[str, ...] | None,
                probe_columns: set[str] | None, keep: frozenset[str], reading: Callable[[Reading], None] | None
                ) -> tuple[pd.DataFrame | None, pd.DataFrame, dict[str, object], Tallies | None] | None:
    """The captures read and matched on a Dask cluster (analyzer/distributed.py): the packets the steps read
    (only the replies' rows when every step reads no others; the rows a screen keeps, with the tallies of the
    others, when every step is screened), the probes table, the counts and the tallies (or None); when every
    step is made per target, analysed there too: (None, each bucket of targets' `BucketResult`, the counts,
    None). None when the captures overlap in time (they are read here)."""
    from .distributed import analyse_on_cluster, cluster, match_on_cluster
    from .reading.schema import PACKET_COLUMNS

    if options.engine != "native":
        raise UsageError("--scheduler and --workers read with the native engine only")
    replies_only = all(s.at_replies for s in chosen) and "packets" not in keep
    if replies_only:
        reply_columns = _reply_columns(chosen)
        wanted = match_columns(probe_columns) if probe_columns is not None else match_columns()
        read_columns = list(dict.fromkeys((*wanted, *reply_columns)))
        out_columns = list(dict.fromkeys(("frame", *reply_columns))) if reply_columns else None
    else:
        read_columns = list(packet_columns or (c.name for c in PACKET_COLUMNS))
        out_columns = read_columns
    screened = all(s.screened for s in chosen) and packet_columns is not None and "packets" not in keep
    if screened:
        read_columns = list(dict.fromkeys((*read_columns, *SCREEN_FIELDS)))
    with cluster(options.scheduler, options.workers) as client:
        if replies_only and all(s.by_target for s in chosen) and "probes" not in keep:
            # (analysed on the workers, a bucket of targets each: only the results travel)
            analysed = analyse_on_cluster(
                client, found.files, options.keep, window_s=options.window_s, records=options.chunk or PART_RECORDS,
                read_columns=read_columns, probe_columns=None if probe_columns is None else sorted(probe_columns),
                packet_columns=out_columns,
                analyse=partial(bucket_result, options=options, steps=tuple(s.name for s in chosen),
                                capture=", ".join(f.name for f in found.files)), reading=reading)
            return None if analysed is None else (None, *analysed, None)
        return match_on_cluster(client, found.files, options.keep, window_s=options.window_s,
                                records=options.chunk or PART_RECORDS, read_columns=read_columns,
                                probe_columns=None if probe_columns is None else sorted(probe_columns),
                                packet_columns=out_columns, replies_only=replies_only, screened=screened,
                                reading=reading)


def _after_matching(packets: pd.DataFrame, chosen: list[Step]) -> pd.DataFrame | None:
    """The packets table once its probes are matched: None when no step reads it, else only the columns the
    steps read when they are fewer than the columns let go (keeping them costs a copy of each)."""
    if any(s.packet_columns is None for s in chosen):
        return packets
    later = list(dict.fromkeys(("frame", *(c for s in chosen for c in s.packet_columns))))
    if later == ["frame"]:
        return None
    return packets[later] if len(later) < len(packets.columns) - len(later) else packets


def columns_for(steps: Iterable[str], keep: Iterable[str] = ()) -> tuple[tuple[str, ...] | None, set[str] | None]:
    """The packets columns to read and the probe columns to match for these steps (None: all), when the caller
    keeps the tables in `keep` whole."""
    chosen = [STEPS[name] for name in steps]
    keep = set(keep)
    if "probes" in keep or any(s.probe_columns is None for s in chosen):
        probe_columns = None
    else:
        probe_columns = {"reply_frame", *(c for s in chosen for c in s.probe_columns)}  # (every run counts replies)
    if "packets" in keep or any(s.packet_columns is None for s in chosen):
        return None, probe_columns
    wanted = match_columns(probe_columns) if probe_columns is not None else match_columns()
    extra = [c for s in chosen for c in s.packet_columns]
    return tuple(dict.fromkeys((*wanted, *extra))), probe_columns


def analyze(capture: str | Sequence[str] | Sources, steps: Iterable[str] = ("scans", "hosts"),
            options: Options = Options(), *, keep: Iterable[str] = (),
            progress: Callable[[str, str], None] | None = None,
            reading: Callable[[Reading], None] | None = None) -> Analysis:
    """Read `capture` (a file; several, or directories and patterns, read as one capture: reading/many.py),
    match its probes and run the `steps` asked for (names of `STEPS`; the steps they need run too). `keep`:
    "packets" and/or "probes", to have the whole tables in the result (read and matched whole); otherwise only
    the columns the steps read are read, and the tables are let go once used. `progress(step, detail)` is
    called as each step starts; `reading(Reading)` as the captures are read (bytes and files done). Raises
    CaptureError for an input that is no capture (the command line reports those and reads the rest: it passes
    `Sources`)."""
    asked = list(dict.fromkeys(steps))
    unknown = sorted(set(asked) - set(STEPS))
    if unknown:
        raise ValueError(f"not steps of the pipeline: {unknown} (steps: {list(STEPS)})")
    if "hosts" in asked and "scans" not in asked:
        asked.insert(0, "scans")
    chosen = [s for s in STEPS.values() if s.name in asked]
    keep = frozenset(keep)
    say = progress or (lambda step, detail: None)
    if any(s.name in _TESTS_RTT for s in chosen):
        _stats.load_in_background()  # scipy.special, on the other core while the capture is read and matched
    packet_columns, probe_columns = columns_for([s.name for s in chosen], keep)

    found = capture if isinstance(capture, Sources) else captures(capture)
    capture = ", ".join(f.name for f in found.files)
    say("reading", capture)
    records = _chunk_records(found, options, chosen, keep)
    notes = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chunked, guard, let_go = None, None, None
        if options.scheduler or options.workers:
            on_cluster = _on_cluster(found, options, chosen, packet_columns, probe_columns, keep, reading)
            if on_cluster is not None:
                chunked, let_go = on_cluster[:3], on_cluster[3]
            if chunked is None:
                notes.append(f"{capture}: the captures overlap in time (several sensors, or a clock set back across a "
                             "file's end): merged, read and matched here, not on the cluster")
            else:
                found.close()
                if "packets" not in keep and chunked[0] is not None and not all(s.at_replies for s in chosen):
                    chunked = (_after_matching(chunked[0], chosen), *chunked[1:])
        elif records and all(s.screened for s in chosen):
            screened = _read_screened(found, options, chosen, probe_columns, records, reading)
            if screened is not None:
                chunked, let_go = screened
        elif records:
            chunked = _read_chunked(found, options, chosen, probe_columns, records, reading)
        if chunked is None:
            del caught[:]  # (a capture tried in chunks is read again, whole: its warnings are said once)
            guard = MemoryGuard.of(options.max_memory, _readers(chosen))
            packets = _read(found, options, packet_columns, reading, guard)
    for w in caught:  # passed on as usual (filters apply); the capture's own are also the result's
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    said = tuple(str(w.message) for w in caught if issubclass(w.category, CaptureWarning))
    if chunked is None:
        say("matching", f"{len(packets)} packets")
        probes = match_in_slices(packets, window_s=options.window_s, columns=probe_columns)
        if guard is not None:
            guard.before_steps(len(packets), len(probes), tuple(s.name for s in chosen), _hosts.SLICE_ROWS)
        counts = _counts(len(packets), packets.attrs)
        if "packets" not in keep:
            packets = _after_matching(packets, chosen)
    else:
        packets, probes, counts = chunked
    run = _Run(options, {}, notes, capture=capture)
    counts.update(captures=tuple(f.name for f in found.files), paths=tuple((f.name, f.path) for f in found.files))
    if isinstance(probes, (_ByTarget, list)):  # buckets of targets: on disk, or their results from a cluster
        for step in chosen:
            say(step.name, "a bucket of targets at a time")
        steps = tuple(s.name for s in chosen)
        done = probes if isinstance(probes, list) else (bucket_result(pk, pr, options, steps, capture)
                                                        for pk, pr in probes)
        results, counts["probes_matched"] = merge_buckets(done, run, asked)
    else:
        if options.targets:
            run.notes += _absent_targets(options, set(probes["dst"].astype(str).unique()), capture)
        probes = _targets_kept(options, probes)
        counts.update(probes_matched=int(probes["reply_frame"].notna().sum()),
                      unsolicited_replies=probes.attrs.get("unsolicited_replies", 0))
        run.results.update(packets=packets, probes=probes, let_go=let_go)
        del packets, probes
        _run_steps(run, chosen, keep, asked, say, give_back=chunked is not None)
        results = run.results
    return Analysis(capture=capture, options=options, warnings=said, notes=tuple(run.notes),
                    **counts, **{name: results.get(name) for name in ("packets", "probes", *STEPS)})


def _absent_targets(options: Options, present: set[str], capture: str) -> list[str]:
    return [f"--target {absent}: no probe to that address in {capture}"
            for absent in sorted(set(options.targets) - present)]


def _targets_kept(options: Options, probes: pd.DataFrame) -> pd.DataFrame:
    """The probes to the targets asked for (all, when none was)."""
    return probes[probes["dst"].astype(str).isin(options.targets)] if options.targets else probes


def _run_steps(run: _Run, chosen: list[Step], keep: frozenset[str], asked: list[str],
               say: Callable[[str, str], None], give_back: bool = False) -> None:
    """The steps, in order, on the run's packets and probes; each result let go once no later step, and no
    caller, needs it. `give_back`: the heap's free memory handed back after each (a capture read in chunks:
    accel/tuning.py)."""
    for i, step in enumerate(chosen):
        say(step.name, f"{len(run.results['probes'])} probes" if i == 0 else "")
        run.results[step.name] = step.run(run)
        later = {n for s in chosen[i + 1:] for n in s.needs}
        for name in ("packets", "probes", *(s.name for s in chosen[:i + 1])):
            if name not in later and name not in keep and name not in asked:
                run.results.pop(name, None)
        if give_back:
            give_back_freed_memory()


@dataclass(frozen=True)
class BucketResult:
    """What the steps made of one bucket of targets (`bucket_result`): their results, their notes, the probes
    answered, the targets probed (before `--target` kept some), and whether the bucket kept no probe."""

    results: dict[str, object]
    notes: tuple[str, ...]
    matched: int
    present: frozenset[str]
    empty: bool


def bucket_result(packets: pd.DataFrame | None, probes: pd.DataFrame, options: Options, steps: tuple[str, ...],
                  capture: str) -> BucketResult:
    """The steps (all made per target) on one bucket of targets' probes and the packets at their replies: where
    the buckets are on disk (`_ByTarget`), or on a cluster's worker (analyzer/distributed.py)."""
    present = frozenset(probes["dst"].astype(str).unique()) if options.targets else frozenset()
    probes = _targets_kept(options, probes)
    one = _Run(options, {"packets": packets, "probes": probes}, [], capture=capture)
    chosen = [STEPS[name] for name in steps]
    matched, empty = int(probes["reply_frame"].notna().sum()), not len(probes)
    del packets, probes
    _run_steps(one, chosen, frozenset(), list(steps), lambda step, detail: None)
    return BucketResult({name: one.results[name] for name in steps}, tuple(one.notes), matched, present, empty)


def merge_buckets(results: Iterable[BucketResult], run: _Run, asked: list[str]) -> tuple[dict[str, object], int]:
    """The buckets' results put together as the whole's (`Step.by_target`), and the probes answered; the notes
    said on `run`. A bucket that kept no probe of the targets asked for counts only when none did. A note the
    steps say in every bucket is the capture's (a note of what no probe shows, said where some probes do show it,
    would be false)."""
    done = list(results)
    ran = [r for r in done if not r.empty] or done[:1]
    if run.options.targets:
        run.notes += _absent_targets(run.options, frozenset().union(*(r.present for r in done)), run.capture)
    run.notes += [note for note in dict.fromkeys(n for r in ran for n in r.notes) if all(note in r.notes for r in ran)]
    merged = {name: STEPS[name].by_target([r.results[name] for r in ran]) for name in asked}
    return merged, sum(r.matched for r in ran)


def analyze_each(capture: str | Sequence[str] | Sources, steps: Iterable[str] = ("signals",),
                 options: Options = Options(), *,
                 on_error: Callable[[CaptureError], None] | None = None) -> Iterator[tuple[Source, Analysis]]:
    """Each capture `capture` names (files, directories, patterns, as `analyze` reads them), analysed on its own
    by `analyze` with the same steps and options, one after the other in capture order (by first packet): the
    hourly captures of an agent fleet are separate measurements, never pooled into one. Yields (the file, with its
    first packet's time, its analysis). An input that is no capture, or a capture that cannot be read, goes to
    `on_error` and the others are analysed; without `on_error` it is raised (CaptureError)."""
    found = capture if isinstance(capture, Sources) else sources(
        [capture] if isinstance(capture, (str, os.PathLike)) else list(capture))

    def failed(error: CaptureError) -> None:
        if on_error is None:
            raise error
        on_error(error)

    try:
        for error in ([] if isinstance(capture, Sources) else found.errors):
            failed(error)
        if options.workers:  # (one local cluster for the series, not one per capture)
            from .distributed import cluster

            with cluster(None, options.workers) as client:
                yield from analyze_each(found, steps, replace(options, scheduler=client.scheduler.address, workers=0),
                                        on_error=on_error)
            return
        for file in found.files:
            try:
                first_ns = file.first_ns if file.first_ns is not None else first_time(file.path)
                one = Sources((replace(file, first_ns=first_ns),))  # (no spool of its own: removed when all are done)
                yield one.files[0], analyze(one, steps, options)
            except CaptureError as error:
                failed(error)
    finally:
        found.close()
