"""`synlens`: a thin command line over the analyzer's API (parse, call, format)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterable
from typing import NoReturn

from .analysis.families import DEFAULT_CONFIDENCE, METHODS, MIN_DIFF_US, MIN_RATIO, MIN_TRIPS, families
from .analysis.match import DEFAULT_WINDOW_S, match, match_columns
from .analysis.stats import PROBE_FIELDS, select_probes
from .errors import CaptureError, CaptureWarning
from .reading.packets import read
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


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), not {text}")
    return value


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
    p.add_argument("capture", help="pcap or pcapng file (gzip-compressed is fine)")
    _engine_option(p)
    p.add_argument("--confidence", type=_confidence, default=None,
                   help="confidence of the family tests, in (0, 1) (default: 0.99 robust, 0.95 qscan)")
    p.add_argument("--method", choices=METHODS, default="robust",
                   help="robust (default): Welch ANOVA on trimmed log RTT, divisive, FWER-controlled; "
                   "qscan: nmap qscan's greedy pooled t with exact quantiles; qscan-table: qscan's table as shipped")
    p.add_argument("--min-ratio", type=_positive, default=MIN_RATIO, metavar="R",
                   help=f"robust: floors closer than this ratio are one family (default {MIN_RATIO:g})")
    p.add_argument("--min-diff", type=_positive, default=MIN_DIFF_US, metavar="US",
                   help=f"robust: floors closer than this many µs are one family (default {MIN_DIFF_US:g})")
    p.add_argument("--signals", choices=("all", "rtt"), default="all",
                   help="all (default): families from RTT, TTL, TCP stack, timestamp clock and IP ID, with the "
                   "evidence that decided; rtt: RTT alone, qscan's meaning")
    p.add_argument("--target", action="append", metavar="ADDR", help="only this target (repeatable)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    p.add_argument("--probes", choices=("syn", "any"), default="syn",
                   help="probes to draw RTTs from: bare SYNs (default, as qscan) or every probe")
    p.add_argument("--window", type=_positive, default=DEFAULT_WINDOW_S, metavar="SECONDS",
                   help=f"reply window: later replies are unsolicited and the probe lost (default {DEFAULT_WINDOW_S:g})")
    for name, text in (("scans", "port scans: scanner, target, technique, phases, tool, and each port's state"),
                       ("hosts", "hosts: MAC, vendor (offline OUI table), OS hints with their evidence")):
        q = sub.add_parser(name, help=text, description=text)
        q.add_argument("capture", help="pcap or pcapng file (gzip-compressed is fine)")
        _engine_option(q)
        q.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
        q.add_argument("--window", type=_positive, default=DEFAULT_WINDOW_S, metavar="SECONDS",
                       help="reply window (default 10)")
    r = sub.add_parser("report", help="one self-contained HTML report: capture, hosts, scans, ports, RTT families",
                       description="Write a self-contained HTML report (no network needed to view it).")
    r.add_argument("capture", help="pcap or pcapng file (gzip-compressed is fine)")
    _engine_option(r)
    r.add_argument("--output", "-o", required=True, metavar="FILE", help="HTML file to write")
    return parser


def _engine_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("native", "tshark"), default="native",
                   help="native (default): synlens's own reader; tshark: Wireshark's dissectors through pyshark "
                   "(slow; for encapsulations the native reader does not decode)")


def cmd_report(args: argparse.Namespace) -> int:
    from .render.report import write_report

    write_report(args.capture, args.output, engine=args.engine, progress=sys.stderr.isatty())
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _scan_results(args: argparse.Namespace) -> tuple:
    from .analysis.hosts import PACKET_FIELDS as HOST_PACKET_FIELDS
    from .analysis.hosts import PROBE_FIELDS as HOST_PROBE_FIELDS
    from .analysis.hosts import hosts
    from .analysis.scans import PACKET_FIELDS as SCAN_PACKET_FIELDS
    from .analysis.scans import PROBE_FIELDS as SCAN_PROBE_FIELDS
    from .analysis.scans import scans

    # Only the columns the scans and hosts stages read (a big capture's whole table is twice its size).
    probe_fields = set(SCAN_PROBE_FIELDS) | set(HOST_PROBE_FIELDS)
    packets = read(args.capture, engine=args.engine,
                   columns=match_columns(probe_fields) + SCAN_PACKET_FIELDS + HOST_PACKET_FIELDS)
    probes = match(packets, window_s=args.window, columns=probe_fields)
    result = scans(packets, probes)
    return packets, result, hosts(packets, probes, result.states, result.scans)


def cmd_scans(args: argparse.Namespace) -> int:
    packets, result, host_table = _scan_results(args)
    meta = {"capture": args.capture, "packets": len(packets)}
    if args.format == "json":
        _write_bytes(scans_json_pieces(result.scans, result.states, host_table, meta, result.notes))
    elif args.format == "csv":
        sys.stdout.write(scans_csv(result.states, result.scans))
    else:
        print(scans_table(result.scans, result.states, meta, notes=result.notes))
    return 0


def cmd_hosts(args: argparse.Namespace) -> int:
    _, result, host_table = _scan_results(args)
    found, states = result
    if args.format == "json":
        _write_bytes([scans_json(found.iloc[0:0], states.iloc[0:0], host_table, {"capture": args.capture})])
    elif args.format == "csv":
        sys.stdout.write(host_table.to_csv(index=False))
    else:
        print(hosts_table(host_table))
    return 0


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
    from .analysis.signals import REPLY_FIELDS
    from .analysis.stats import load_in_background

    load_in_background()  # scipy.special, for the RTT tests, on the other core while the capture is read and matched

    # Only the fields matching, the statistics and the signals read: on a big capture, a fraction of the whole
    # table (and of the whole probes table).
    packets = read(args.capture, engine=args.engine, columns=match_columns(PROBE_FIELDS) + REPLY_FIELDS)
    probes = match(packets, window_s=args.window, columns=PROBE_FIELDS)
    n_packets, malformed = len(packets), packets.attrs.get("malformed", 0)
    packets = packets[["frame", *REPLY_FIELDS]]  # matched: the other columns' memory is free for what follows
    if args.target:
        dst = probes["dst"].astype(str)
        for absent in sorted(set(args.target) - set(dst.unique())):
            print(f"synlens: note: --target {absent}: no probe to that address in {args.capture}", file=sys.stderr)
        probes = probes[dst.isin(args.target)]
    if args.probes == "syn" and len(probes) and select_probes(probes, "syn").empty:
        print(f"synlens: note: no bare SYN probe in {args.capture} (its probes carry other flags, or are not "
              "TCP): no RTT to report; --probes any draws RTTs from every probe", file=sys.stderr)
    options = dict(method=args.method, confidence=args.confidence, probes=args.probes, min_ratio=args.min_ratio,
                   min_diff_us=args.min_diff)
    family_table = None
    if args.signals == "all":
        from .analysis.signals import signal_families

        fams, family_table = signal_families(packets, probes, **options)
    else:
        fams = families(probes, **options)
    meta = {
        "capture": args.capture,
        "signals": args.signals,
        "method": args.method,
        **({"min_trips": MIN_TRIPS} if args.method == "robust" else {}),
        "confidence": args.confidence or DEFAULT_CONFIDENCE[args.method],
        "packets": n_packets,
        "malformed_packets": malformed,
        "probes_matched": int(probes["reply_frame"].notna().sum()),
        "unsolicited_replies": probes.attrs.get("unsolicited_replies", 0),
    }
    del packets, probes  # the output needs neither: their memory is free for it
    if args.format == "json":
        _write_bytes(rtt_json_pieces(fams, meta, family_table))
    elif args.format == "csv":
        sys.stdout.write(rtt_csv(fams))
    else:
        for block in rtt_table_blocks(fams, meta, family_table):
            sys.stdout.write("\n".join(block) + "\n")
    return 0


COMMANDS = {"rtt": cmd_rtt, "scans": cmd_scans, "hosts": cmd_hosts, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _warn_line
    try:
        return COMMANDS[args.command](args)
    except CaptureError as e:
        print(f"synlens: error: {e}", file=sys.stderr)
        return 2
    except MemoryError as e:  # a capture too big for this machine, at any step: said in one line, as bad input is
        detail = str(e).splitlines()[0] if str(e) else "no detail"
        print(f"synlens: error: {args.capture}: not enough memory to analyse it ({detail})", file=sys.stderr)
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
