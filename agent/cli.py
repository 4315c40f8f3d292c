"""`synlens-agent probe …`: parse arguments, build a Config, call `probe.run`. Errors: one line, exit 2."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from .errors import AgentError
from .ports import parse_ports, parse_timespec, resolve_target
from .probe import HARD_MAX_RATE, Config, run

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage block: errors must be easy to read
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="synlens-agent", description="Jittered TCP SYN probes (the qscan method), "
                     "every probe and reply written to a nanosecond pcap.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("probe", help="probe ports of one or more targets and capture to a pcap")
    p.add_argument("targets", nargs="+", metavar="TARGET", help="IPv4/IPv6 address or host name")
    p.add_argument("--ports", help="e.g. 22,80,1000-1010 (default: discovery over nmap's top 100 TCP ports)")
    p.add_argument("--write", "-w", required=True, metavar="OUT.pcap", help="output pcap (+ OUT.pcap.json)")
    p.add_argument("--numtrips", type=int, default=10, help="probes per port, >= 3 (%(default)s)")
    p.add_argument("--delay", default="200ms", help="mean gap, jittered 50-150%% (%(default)s)")
    p.add_argument("--interface", "-i", help="send and capture on this interface (default: the route's)")
    p.add_argument("--timeout", default="2s", help="wait for late replies after the last probe (%(default)s)")
    p.add_argument("--numopen", type=int, default=8, help="discovery: open ports kept, <0: all (%(default)s)")
    p.add_argument("--numclosed", type=int, default=1, help="discovery: closed ports kept (%(default)s)")
    p.add_argument("--user", help="user to become once sockets are open (default: the sudo user)")
    p.add_argument("--max-rate", type=float, default=100.0,
                   help=f"probes per second, at most {HARD_MAX_RATE:g} (%(default)s)")
    p.add_argument("--tcp-timestamps", action="store_true", help="add a TCP timestamp option to the probes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        targets = tuple(dict.fromkeys(resolve_target(t) for t in args.targets))  # dedupe, keep order
        cfg = Config(targets=targets, ports=parse_ports(args.ports) if args.ports is not None else None,
                     write=args.write, numtrips=args.numtrips, delay_s=parse_timespec(args.delay),
                     interface=args.interface, timeout_s=parse_timespec(args.timeout), numopen=args.numopen,
                     numclosed=args.numclosed, user=args.user, max_rate=args.max_rate,
                     tcp_timestamps=args.tcp_timestamps)
        return run(cfg)
    except AgentError as e:
        print(f"synlens-agent: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # only before the signal handlers are in place
        print("synlens-agent: interrupted", file=sys.stderr)
        return 130
