"""`synlens`: a thin command line over the analyzer's API (parse, call, format)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterable
from typing import NoReturn

from .analysis.buckets import DEFAULT_BUDGET
from .analysis.changes import Snapshot, changes
from .analysis.families import METHODS, MIN_DIFF_US, MIN_RATIO, MIN_TRIPS
from .analysis.match import DEFAULT_WINDOW_S
from .errors import CaptureError, CaptureWarning, UsageError
from .pipeline import CHUNKED_ABOVE, Analysis, Options, analyze, analyze_each
from .reading.filters import Filter
from .reading.many import CHUNK_RECORDS
from .reading.merge import DEDUP_WINDOW_NS
from .reading.sources import Sources, sources
from .render.changes import changes_csv, changes_json, changes_table_lines
from .render.frames import naming, with_labels
from .render.output import (
    hosts_table,
    rtt_csv,
    rtt_json_pieces,
    rtt_table_blocks,
    scans_csv,
    scans_json,
    scans_json_pieces,
    scans_table,
)
from .render.progress import Meter


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), not {text}")
    return value


def _records(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _size(text: str) -> int:
    """Bytes, as GNU sort's --buffer-size takes them: a whole number, with K, M or G (powers of 1,024)."""
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    try:
        value = int(text[:-1] if scale > 1 else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size (a whole number, with K, M or G): {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value * scale


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synlens", description="Offline analysis of packet captures: "
                                     "probe/reply matching, RTT port families, scan forensics.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("rtt", help="per-port RTT, loss and families (qscan's job, from a capture)",
                       description="Pair probes with replies and group each target's ports into families "
                       "whose round-trip times differ significantly.")
    _input_options(p)
    p.add_argument("--confidence", type=_confidence, default=None,
                   help="confidence of the family tests, in (0, 1) (default: 0.99 robust, 0.95 qscan)")
    p.add_argument("--method", choices=METHODS, default="robust",
                   help="robust (default): ports compared within the trips that probed them together (a blocked "
                   "rank test, Skillings-Mack), divisive, FWER-controlled; "
                   "qscan: nmap qscan's greedy pooled t with exact quantiles; qscan-table: qscan's table as shipped")
    p.add_argument("--min-ratio", type=_positive, default=MIN_RATIO, metavar="R",
                   help=f"robust: floors closer than this ratio are one family (default {MIN_RATIO:g})")
    p.add_argument("--min-diff", type=_positive, default=MIN_DIFF_US, metavar="US",
                   help=f"robust: floors closer than this many µs are one family (default {MIN_DIFF_US:g})")
    p.add_argument("--signals", choices=("all", "rtt"), default="all",
                   help="all (default): families from RTT, TTL, TCP stack, timestamp clock and IP ID, with the "
                   "evidence that decided; rtt: RTT alone, qscan's meaning")
    p.add_argument("--target", action="append", metavar="ADDR", help="only this target (repeatable)")
    p.add_argument("--each", action="store_true",
                   help="analyse each capture on its own (a series of captures of the same targets, as an agent "
                   "fleet's hourly runs) and show each target's families per capture and what changed between "
                   "them (docs/fleet.md)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    p.add_argument("--probes", choices=("syn", "any"), default="syn",
                   help="probes to draw RTTs from: bare SYNs (default, as qscan) or every probe")
    p.add_argument("--window", type=_positive, default=DEFAULT_WINDOW_S, metavar="SECONDS",
                   help=f"reply window: later replies are unsolicited and the probe lost (default {DEFAULT_WINDOW_S:g})")
    _cluster_options(p)
    _chunk_option(p, "in memory bounded by a few reply windows of traffic")
    p.add_argument("--buffer-size", type=_size, default=None, metavar="SIZE",
                   help="matched in chunks, hold at most this much of the probes in memory; beyond it they go to "
                   f"temporary files (in TMPDIR), a file per bucket of targets, analysed a bucket at a time (default "
                   f"{DEFAULT_BUDGET >> 20}M; K, M, G)")
    _memory_option(p)
    for name, text in (("scans", "port scans: scanner, target, technique, phases, tool, and each port's state"),
                       ("hosts", "hosts: MAC, vendor (offline OUI table), OS hints with their evidence")):
        q = sub.add_parser(name, help=text, description=text)
        _input_options(q)
        q.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
        q.add_argument("--window", type=_positive, default=DEFAULT_WINDOW_S, metavar="SECONDS",
                       help="reply window (default 10)")
        _cluster_options(q)
        _chunk_option(q, "keeping of the packets only the rows scans and hosts read (docs/scans.md)")
        _memory_option(q)
    r = sub.add_parser("report", help="one self-contained HTML report: capture, hosts, scans, ports, RTT families",
                       description="Write a self-contained HTML report (no network needed to view it).")
    _input_options(r)
    r.add_argument("--output", "-o", required=True, metavar="FILE", help="HTML file to write")
    _cluster_options(r)
    _memory_option(r)
    x = sub.add_parser("export", help="the packets and probes tables as Parquet, for DuckDB, Spark, Polars, dask",
                       description="Write the captures' packets and probes tables as Parquet datasets partitioned "
                       "by hour (Hive style), with a manifest of the captures read.")
    _input_options(x)
    x.add_argument("--to", required=True, metavar="DIR", help="folder to write (new, or empty)")
    x.add_argument("--window", type=_positive, default=DEFAULT_WINDOW_S, metavar="SECONDS",
                   help="reply window for the probes table (default 10)")
    return parser


def _input_options(p: argparse.ArgumentParser) -> None:
    """The captures a command reads, and which of their packets."""
    p.add_argument("captures", nargs="+", metavar="CAPTURE",
                   help="pcap or pcapng files (gzip-compressed is fine), directories of them, glob patterns, or - "
                   "for standard input: read as one capture, in the order their packets were captured")
    p.add_argument("--engine", choices=("native", "tshark"), default="native",
                   help="native (default): synlens's own reader; tshark: Wireshark's dissectors through pyshark "
                   "(slow; one capture; for encapsulations the native reader does not decode)")
    g = p.add_argument_group("which packets (applied while reading)")
    g.add_argument("--since", metavar="TIME", help="from this time: ISO 8601 (2024-05-01T10:00:00Z), seconds "
                   "since 1970, or an offset from the first packet (+15m, +2h, +1d)")
    g.add_argument("--until", metavar="TIME", help="before this time (as --since)")
    g.add_argument("--host", action="append", default=[], metavar="ADDR",
                   help="packets from or to this address (also the packet an ICMP error quotes; repeatable)")
    g.add_argument("--net", action="append", default=[], metavar="CIDR", help="packets from or to this network "
                   "(repeatable)")
    g.add_argument("--port", action="append", default=[], type=int, metavar="N",
                   help="packets from or to this TCP/UDP port (repeatable)")
    g.add_argument("--dedup-window", type=float, default=DEDUP_WINDOW_NS / 1e9, metavar="SECONDS",
                   help="a frame another file captured, byte for byte, at most this long before is a duplicate "
                   f"(default {DEDUP_WINDOW_NS / 1e9:g}; 0: keep every frame)")


def _chunk_option(p: argparse.ArgumentParser, how: str) -> None:
    p.add_argument("--chunk", type=_records, default=None, metavar="RECORDS",
                   help=f"match this many records at a time, {how} (default: captures over {CHUNKED_ABOVE >> 30} GB "
                   f"in chunks of {CHUNK_RECORDS:,}, smaller ones whole; 0: whole)")


def _memory_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-memory", type=_size, default=None, metavar="SIZE",
                   help="the most memory the run may take when it reads the packets table whole (scans, hosts, "
                   "report; rtt under 2 GB), or a bucket of targets' probes (rtt past --buffer-size): a peak "
                   "projected past it stops the run with an error, before the system runs out (default: what the "
                   "run holds and the system has available when reading begins; 0: no limit; K, M, G)")


def _cluster_options(p: argparse.ArgumentParser) -> None:
    """Where reading and matching run: this process, or a Dask cluster (analyzer/distributed.py)."""
    g = p.add_argument_group("where the work runs (dask.distributed; the workers read the captures by their paths)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a Dask scheduler, as tcp://host:8786 (default: $SYNLENS_SCHEDULER, else this process)")
    g.add_argument("--workers", type=_records, default=0, metavar="N",
                   help="start a local Dask cluster of N worker processes for the run")


def cmd_report(args: argparse.Namespace) -> int:
    from .render.report import write_report

    options = _options(args)  # (the options checked before the captures are looked at)
    write_report(_found(args), args.output, options=options, progress=sys.stderr.isatty())
    print(f"wrote {args.output}", file=sys.stderr)
    return _status(args)


def cmd_export(args: argparse.Namespace) -> int:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise UsageError("export writes Parquet with pyarrow, which is not installed: "
                         "pip install 'synlens[parquet]'") from None
    from .render.export import export

    options = _options(args)
    if options.engine != "native":
        raise UsageError("export reads with the native engine only")
    done = export(_found(args), args.to, keep=options.keep, dedup_ns=options.dedup_ns, window_s=options.window_s)
    print(f"wrote {done.folder}: {done.packets} packets, {done.probes} probes, {len(done.hours)} hour(s), "
          f"{done.files} Parquet file(s)", file=sys.stderr)
    return _status(args)


def _options(args: argparse.Namespace) -> Options:
    """The pipeline's options from a command's arguments (those the command has)."""
    given = {name: getattr(args, arg) for name, arg in (
        ("engine", "engine"), ("window_s", "window"), ("method", "method"), ("confidence", "confidence"),
        ("probes", "probes"), ("min_ratio", "min_ratio"), ("min_diff_us", "min_diff")) if hasattr(args, arg)}
    try:
        keep = Filter.of(args.since, args.until, args.host, args.net, args.port)
    except ValueError as e:  # (a time, address or port the user wrote: said in one line, as argparse would)
        raise UsageError(str(e)) from None
    if getattr(args, "chunk", None) is not None:
        given["chunk"] = args.chunk
    if getattr(args, "buffer_size", None) is not None:
        given["buffer_size"] = args.buffer_size
    if getattr(args, "max_memory", None) is not None:
        given["max_memory"] = args.max_memory
    if hasattr(args, "workers"):
        from .distributed import scheduler_address

        if args.scheduler and args.workers:
            raise UsageError("--scheduler and --workers: a cluster running, or one started for the run, not both")
        given.update(scheduler=None if args.workers else scheduler_address(args.scheduler), workers=args.workers)
    return Options(**given, targets=tuple(getattr(args, "target", None) or ()), keep=keep,
                   dedup_ns=round(args.dedup_window * 1e9))


def _found(args: argparse.Namespace) -> Sources:
    """The captures the command names; each name that is none is said in one line (the command reads the
    others and exits 1; none left: the first such error ends it, exit 2)."""
    found = sources(args.captures)
    if not found.files:  # (nothing to read: each error said, the last as the command's own)
        for error in found.errors[:-1]:
            print(f"synlens: error: {error}", file=sys.stderr)
        raise found.errors[-1] if found.errors else CaptureError("-", "no capture")
    for error in found.errors:
        print(f"synlens: error: {error}", file=sys.stderr)
    args.input_errors = len(found.errors)
    return found


def _status(args: argparse.Namespace) -> int:
    """0, or 1 when some inputs were not captures (the rest were analysed)."""
    return 1 if getattr(args, "input_errors", 0) else 0


def _capture_name(args: argparse.Namespace, analysis: Analysis) -> str | list[str]:
    """How outputs name the capture: as given, for one file; the files' names, for several."""
    if len(analysis.captures) == 1 and len(args.captures) == 1:
        return args.captures[0]
    return list(analysis.captures)


def _analyze(found: Sources, steps: tuple[str, ...], options: Options) -> Analysis:
    """The pipeline, with reading's progress on a terminal (render/progress.py)."""
    meter = Meter()
    try:
        return analyze(found, steps, options, reading=meter if meter.enabled else None)
    finally:
        meter.close()


def _say_notes(analysis: Analysis) -> None:
    for note in analysis.notes:
        print(f"synlens: note: {note}", file=sys.stderr)


def cmd_scans(args: argparse.Namespace) -> int:
    options = _options(args)
    analysis = _analyze(_found(args), ("scans", "hosts"), options)
    _say_notes(analysis)
    result = analysis.scans
    meta = {"capture": _capture_name(args, analysis), "packets": analysis.packet_count}
    with naming(analysis.frames):
        if args.format == "json":
            _write_bytes(scans_json_pieces(result.scans, result.states, analysis.hosts, meta, result.notes))
        elif args.format == "csv":
            sys.stdout.write(scans_csv(result.states, result.scans))
        else:
            print(scans_table(result.scans, result.states, meta, notes=result.notes))
    return _status(args)


def cmd_hosts(args: argparse.Namespace) -> int:
    options = _options(args)
    analysis = _analyze(_found(args), ("scans", "hosts"), options)
    _say_notes(analysis)
    found, states = analysis.scans
    with naming(analysis.frames):
        if args.format == "json":
            _write_bytes([scans_json(found.iloc[0:0], states.iloc[0:0], analysis.hosts,
                                     {"capture": _capture_name(args, analysis)})])
        elif args.format == "csv":
            sys.stdout.write(with_labels(analysis.hosts).to_csv(index=False))
        else:
            print(hosts_table(analysis.hosts))
    return _status(args)


def _write_bytes(pieces: Iterable[bytes]) -> None:
    """A line of UTF-8 text already encoded (JSON), in pieces, to stdout, without decoding it to write it (a
    stdout with no byte buffer under it, as a test's StringIO, gets it decoded)."""
    out = getattr(sys.stdout, "buffer", None)
    if out is None:
        print(b"".join(pieces).decode())
        return
    sys.stdout.flush()
    for piece in pieces:
        out.write(piece)
    out.write(b"\n")
    out.flush()


def _warn_line(message, category, filename, lineno, file=None, line=None) -> None:
    prefix = "warning" if issubclass(category, CaptureWarning) else category.__name__
    print(f"synlens: {prefix}: {message}", file=sys.stderr)


def cmd_rtt(args: argparse.Namespace) -> int:
    options = _options(args)
    steps = ("signals",) if args.signals == "all" else ("families",)
    if args.each:
        return _rtt_each(args, steps, options)
    analysis = _analyze(_found(args), steps, options)
    _say_notes(analysis)
    fams, family_table = analysis.signals if args.signals == "all" else (analysis.families, None)
    meta = {
        "capture": _capture_name(args, analysis),
        "signals": args.signals,
        "method": args.method,
        **({"min_trips": MIN_TRIPS} if args.method == "robust" else {}),
        "confidence": options.family_confidence,
        "packets": analysis.packet_count,
        "malformed_packets": analysis.malformed,
        "probes_matched": analysis.probes_matched,
        "unsolicited_replies": analysis.unsolicited_replies,
    }
    del analysis  # the output needs only the families: the rest's memory is free for it
    if args.format == "json":
        _write_bytes(rtt_json_pieces(fams, meta, family_table))
    elif args.format == "csv":
        sys.stdout.write(rtt_csv(fams))
    else:
        for block in rtt_table_blocks(fams, meta, family_table):
            sys.stdout.write("\n".join(block) + "\n")
    return _status(args)


def _rtt_each(args: argparse.Namespace, steps: tuple[str, ...], options: Options) -> int:
    """`rtt --each`: every capture analysed on its own, then compared (analysis/changes.py)."""
    found = _found(args)
    errors: list[CaptureError] = []
    snapshots = []
    for source, analysis in analyze_each(found, steps, options, on_error=errors.append):
        _say_notes(analysis)
        snapshots.append(Snapshot.of(analysis, source.first_ns))
        del analysis  # (one capture's tables at a time)
    for error in errors[:-1] if not snapshots else errors:  # (none analysed: the last is the command's own)
        print(f"synlens: error: {error}", file=sys.stderr)
    if not snapshots:
        raise errors[-1]
    args.input_errors += len(errors)
    series = changes(snapshots)
    meta = {"each": True, "signals": args.signals, "method": args.method,
            **({"min_trips": MIN_TRIPS} if args.method == "robust" else {}), "confidence": options.family_confidence}
    if args.format == "json":
        _write_bytes([changes_json(series, meta)])
    elif args.format == "csv":
        sys.stdout.write(changes_csv(series))
    else:
        for line in changes_table_lines(series, meta):
            print(line)
    return _status(args)


COMMANDS = {"rtt": cmd_rtt, "scans": cmd_scans, "hosts": cmd_hosts, "report": cmd_report, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _warn_line
    try:
        return COMMANDS[args.command](args)
    except (CaptureError, UsageError) as e:
        print(f"synlens: error: {e}", file=sys.stderr)
        return 2
    except MemoryError as e:  # a capture too big for this machine, at any step: said in one line, as bad input is
        detail = str(e).splitlines()[0] if str(e) else "no detail"
        print(f"synlens: error: {', '.join(args.captures)}: not enough memory to analyse it ({detail})",
              file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`synlens … | head`): not an error
        return 0
    except OSError as e:  # an output that cannot be written, a full disk …
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"synlens: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("synlens: interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The command line (started by analyzer.__main__, which sets the process up first): main(), its output
    flushed, then the process ends at once. The interpreter's own teardown (freeing every module's objects
    one by one) takes a fifth of a second once pandas and scipy are loaded, and no output waits on it:
    every file is closed by then."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a reader that went away (`synlens … | head`): nothing more to say
            pass
    os._exit(code)
