"""User-space delay line: a wire that holds every Ethernet frame for a fixed time.

The lab machines have no netem qdisc, so a forwarded port is made "farther away" by
running this script in a namespace that owns both ends of the wire::

    python3 delayline.py --delay-ms 1.0 dly-gw:dly-inner [dly-gw2:dly-inner2 ...]

Each ``A:B`` pair is one wire: frames received on A are re-sent out of B after the
delay, and the other way round. It prints ``ready`` on stdout once every socket is
bound, and runs until SIGTERM/SIGINT. With ``--then-delay-ms D``, SIGUSR1 switches the delay to D for the frames
that arrive from then on (a path that gets slower mid-scan: tests of RTT drift). Standard library only.

Precision matters more than throughput here: RTT-family analysis compares means tens of
microseconds apart, so a line whose delay depends on how long it slept (CPU wake-up
latency) or on other processes' load would invent families. Hence the delay is counted
from the kernel's receive timestamp, the last ~100 us before a frame is due are spun
rather than slept, and the process asks for SCHED_FIFO (falling back quietly if denied).

The veths that *feed* the line must have tx checksum offload turned off
(``ethtool -K dev tx off``): AF_PACKET hands us frames whose offloaded TCP checksum
was never filled in, and copying those makes TCP fail silently.
"""

from __future__ import annotations

import argparse
import collections
import os
import selectors
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # sll_pkttype of frames this host sent itself
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python 3.11 lacks the name
MAX_FRAME = 65535
RCVBUF_BYTES = 4 << 20  # absorbs bursts from fast scans while frames wait out the delay
SPIN_NS = 100_000  # sleeping closer to the deadline than this risks waking late


def open_port(ifname: str) -> socket.socket:
    """A non-blocking raw socket that sees every frame arriving on `ifname` only."""
    # Protocol 0 at creation receives nothing; bind() then starts reception on this
    # interface alone, so no frame from another interface slips in before the bind.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    return sock


def request_realtime(priority: int) -> None:
    """Run ahead of ordinary processes so a busy machine doesn't stretch the delay."""
    if priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except (OSError, AttributeError):
            pass  # unprivileged or unsupported: still correct, only noisier


def parse_pairs(specs: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for spec in specs:
        a, sep, b = spec.partition(":")
        if not (sep and a and b):
            raise SystemExit(f"bad interface pair {spec!r}, expected A:B")
        pairs.append((a, b))
    return pairs


def run(pairs: list[tuple[str, str]], delay_ns: int, then_ns: int | None = None) -> None:
    # select() takes microsecond timeouts; epoll/poll round up to whole milliseconds.
    selector = selectors.SelectSelector()
    for a_name, b_name in pairs:
        a, b = open_port(a_name), open_port(b_name)
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
    # One FIFO suffices: the delay is constant, so frames fall due in arrival order.
    # Times are CLOCK_REALTIME ns, the clock of the kernel's receive timestamps.
    pending: collections.deque[tuple[int, socket.socket, bytes]] = collections.deque()
    delay = [delay_ns]  # (SIGUSR1 replaces it: frames already waiting keep their due times)
    if then_ns is not None:
        signal.signal(signal.SIGUSR1, lambda *_: delay.__setitem__(0, then_ns))
    print("ready", flush=True)
    while True:
        timeout = None
        if pending:
            timeout = max(0.0, (pending[0][0] - time.time_ns() - SPIN_NS) / 1e9)
        for key, _ in selector.select(timeout):
            receive_all(key.fileobj, key.data, pending, delay[0])  # type: ignore[arg-type]
        send_due(pending)


def receive_all(
    sock: socket.socket,
    out: socket.socket,
    pending: collections.deque[tuple[int, socket.socket, bytes]],
    delay_ns: int,
) -> None:
    while True:
        try:
            frame, ancillary, _, address = sock.recvmsg(MAX_FRAME, 64)
        except BlockingIOError:
            return
        # Our own transmissions on this end echo back to the socket; re-sending them
        # would bounce frames between the two ends forever.
        if address[2] == PACKET_OUTGOING:
            continue
        pending.append((arrival_ns(ancillary) + delay_ns, out, frame))


def arrival_ns(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The kernel's receive time of a frame: immune to how late this process woke up."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec * 1_000_000_000 + nsec
    return time.time_ns()


def send_due(pending: collections.deque[tuple[int, socket.socket, bytes]]) -> None:
    """Send every frame due within SPIN_NS, spinning until each one's exact due time."""
    while pending and pending[0][0] - time.time_ns() <= SPIN_NS:
        due, out, frame = pending.popleft()
        while time.time_ns() < due:
            pass
        try:
            out.send(frame)
        except OSError:
            pass  # a full tx queue drops the frame, as a real congested wire would


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay in milliseconds")
    parser.add_argument("--then-delay-ms", type=float, default=None,
                        help="one-way delay from the first SIGUSR1 on (a longer one keeps frames in order)")
    parser.add_argument("--rt-priority", type=int, default=10, help="SCHED_FIFO priority, 0 for none")
    parser.add_argument("pairs", nargs="+", metavar="A:B", help="interface pairs to join")
    args = parser.parse_args(argv)
    request_realtime(args.rt_priority)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        then = None if args.then_delay_ms is None else round(args.then_delay_ms * 1e6)
        run(parse_pairs(args.pairs), round(args.delay_ms * 1e6), then)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
