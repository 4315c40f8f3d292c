"""The qscan method: plan trips of bare SYNs with jittered gaps, send them, capture every probe and reply.

`run`: route lookup → raw sockets (the only privileged step) → drop privileges → create the output as
that user → discovery pass (without --ports) → trips → late-reply window → commit pcap + sidecar JSON.
SIGINT/SIGTERM stop the sending; what was captured is still committed.
"""

from __future__ import annotations

import json
import random
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from . import privs
from .capture import AtomicFile, Capture, Frame, write_header, write_record
from .errors import AgentError
from .packet import TCPFlag, ipv4, tcp_syn
from .ports import DEFAULT_PORTS, Address
from .route import egress

HARD_MAX_RATE = 1000.0  # probes/s; --max-rate may not exceed it
SPIN_S = 0.001  # wake this early and spin: select() wake-up latency would stretch the gaps


@dataclass(frozen=True)
class Config:
    """Validated once, here; everything after trusts it."""

    targets: tuple[Address, ...]
    ports: tuple[int, ...] | None  # None: the discovery pass picks them
    write: str
    numtrips: int = 10
    delay_s: float = 0.2
    interface: str | None = None
    timeout_s: float = 2.0
    numopen: int = 8
    numclosed: int = 1
    user: str | None = None
    max_rate: float = 100.0
    tcp_timestamps: bool = False

    def __post_init__(self) -> None:
        if self.numtrips < 3:
            raise AgentError(f"--numtrips {self.numtrips}: qscan needs at least 3 trips")
        if self.delay_s <= 0 or self.timeout_s < 0:
            raise AgentError("--delay must be positive and --timeout not negative")
        if not 0 < self.max_rate <= HARD_MAX_RATE:
            raise AgentError(f"--max-rate {self.max_rate:g} must be in (0, {HARD_MAX_RATE:g}] probes/s")
        if 1 / (0.5 * self.delay_s) > self.max_rate * 1.000001:
            raise AgentError(f"--delay {self.delay_s * 1000:g}ms jitters down to {self.delay_s * 500:g}ms, "
                             f"faster than --max-rate {self.max_rate:g}/s; raise the delay or the rate cap")


@dataclass(frozen=True)
class Probe:
    trip: int  # 1-based; 0 in the discovery pass
    target: Address
    port: int
    sport: int  # a fresh random source port per probe, as qscan.nse
    seq: int  # a fresh random sequence number per probe


def plan(ports: dict[Address, tuple[int, ...]], trips: int, rng: random.Random, first: int = 1
         ) -> list[Probe]:
    """`trips` rounds; each round visits every target's ports in turn."""
    return [Probe(trip, target, port, rng.randint(1025, 65535), rng.getrandbits(32))
            for trip in range(first, first + trips) for target, tports in ports.items() for port in tports]


def gaps(n: int, delay_s: float, rng: random.Random) -> list[float]:
    """Seconds to wait after each probe: uniform in 50–150 % of the delay, as qscan.nse."""
    return [delay_s * rng.uniform(0.5, 1.5) for _ in range(n)]


class Stop:
    """SIGINT/SIGTERM set `signum`; the wake-up socket makes a pending select() return at once."""

    def __init__(self) -> None:
        self.signum = 0
        self.wake_r, self._wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.signum = signum


class Sender:
    """Raw sockets: IPv4 with our own header (IPPROTO_RAW), IPv6 with the kernel's (IPPROTO_TCP)."""

    def __init__(self, versions: set[int], interface: str | None) -> None:
        self.ifindex = socket.if_nametoindex(interface) if interface else 0
        raw = socket.SOCK_RAW
        self.v4 = socket.socket(socket.AF_INET, raw, socket.IPPROTO_RAW) if 4 in versions else None
        self.v6 = socket.socket(socket.AF_INET6, raw, socket.IPPROTO_TCP) if 6 in versions else None
        if self.v6:  # it is handed a copy of every TCP segment, never read: keep its queue tiny
            self.v6.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        if self.v4 and interface:
            self.v4.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())

    def send(self, probe: Probe, source: Address, tsval: int | None) -> None:
        segment = tcp_syn(source, probe.target, probe.sport, probe.port, probe.seq, tsval)
        if probe.target.version == 4 and self.v4:  # IP id: any value does; the random seq's low bits
            self.v4.sendto(ipv4(source, probe.target, segment, probe.seq & 0xFFFF), (str(probe.target), 0))
        elif self.v6:  # IPV6_PKTINFO pins the source the checksum was computed for (and --interface)
            info = source.packed + struct.pack("@I", self.ifindex)
            self.v6.sendmsg([segment], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)], 0,
                            (str(probe.target), 0))

    def close(self) -> None:
        for s in (self.v4, self.v6):
            if s:
                s.close()


Key = tuple[Address, Address, int, int]  # (us, target, our source port, target port)


def _belongs(frame: Frame, keys: set[Key]) -> bool:
    """One of our probes, a reply to one, or an ICMP error quoting one — never other traffic."""
    ip = frame.ip
    if ports := ip.ports():
        return (ip.src, ip.dst, *ports) in keys or (ip.dst, ip.src, ports[1], ports[0]) in keys
    quoted = ip.quoted()
    qports = quoted.ports() if quoted else None
    return bool(quoted and qports and ip.dst == quoted.src and (quoted.src, quoted.dst, *qports) in keys)


def exchange(cap: Capture, sender: Sender, probes: list[Probe], after: list[float], cfg: Config,
             sources: dict[Address, Address], stop: Stop, keep: Callable[[Frame], None]
             ) -> tuple[int, float]:
    """Send `probes`, waiting `after[i]` s after each, then `cfg.timeout_s` for late replies; each frame
    that belongs to a probe goes to `keep`. Returns (probes sent, worst lateness in s), lateness being how
    long after its planned instant a probe's sendto() returned."""
    keys = {(sources[p.target], p.target, p.sport, p.port) for p in probes}

    def pump(until: float) -> None:
        while not stop.signum and (left := until - time.monotonic()) > 0:
            ready, _, _ = select.select([cap.sock, stop.wake_r], [], [], left)
            if stop.wake_r in ready:
                stop.wake_r.recv(64)
            if cap.sock in ready and (frame := cap.read()) and _belongs(frame, keys):
                keep(frame)

    sent, next_at, late_s, clock0 = 0, time.monotonic(), 0.0, time.monotonic_ns()
    for i, (probe, gap) in enumerate(zip(probes, after)):
        pump(next_at - SPIN_S)
        while not stop.signum and time.monotonic() < next_at:
            pass
        if stop.signum:
            break
        tsval = (time.monotonic_ns() - clock0) // 1_000_000 + 1 if cfg.tcp_timestamps else None  # ms clock
        try:
            sender.send(probe, sources[probe.target], tsval)
            sent += 1
        except OSError as e:  # e.g. a local firewall (EPERM): the probe is then rightly absent from the pcap
            if sent == i:  # warn once, at the first failure
                print(f"synlens-agent: warning: send to {probe.target} port {probe.port}: {e.strerror}",
                      file=sys.stderr)
        # Timed from *after* sendto(), inside which the kernel stamps the probe: a preempted send can only
        # stretch a gap on the capture clock, never shorten it below the plan or the rate cap.
        done = time.monotonic()
        late_s = max(late_s, done - next_at)  # off-CPU time, send path included, stretches the gaps
        next_at = done + max(gap, 1 / cfg.max_rate)
    pump(time.monotonic() + cfg.timeout_s)
    while select.select([cap.sock], [], [], 0)[0]:  # what is already queued, even when stopped
        if (frame := cap.read()) and _belongs(frame, keys):
            keep(frame)
    return sent, late_s


def discover(cap: Capture, sender: Sender, cfg: Config, sources: dict[Address, Address], stop: Stop,
             rng: random.Random) -> dict[Address, tuple[int, ...]]:
    """One SYN to each default port; keep numopen open (SYN/ACK) and numclosed closed (RST), as qscan."""
    probes = plan({t: DEFAULT_PORTS for t in cfg.targets}, 1, rng, first=0)
    sport = {(p.target, p.port): p.sport for p in probes}
    flags: dict[tuple[Address, int], TCPFlag] = {}

    def keep(frame: Frame) -> None:  # a reply comes from the probed port to the probe's source port
        ip, ports = frame.ip, frame.ip.ports()
        if ports and sport.get((ip.src, ports[0])) == ports[1] and ip.dst == sources[ip.src]:
            flags[(ip.src, ports[0])] = ip.tcp_flags()

    exchange(cap, sender, probes, [1 / cfg.max_rate] * len(probes), cfg, sources, stop, keep)
    numopen = None if cfg.numopen < 0 else cfg.numopen  # negative: no limit, as in qscan
    numclosed = None if cfg.numclosed < 0 else cfg.numclosed
    chosen = {}
    for t in cfg.targets:
        found = [(p, flags.get((t, p), TCPFlag(0))) for p in DEFAULT_PORTS]
        opened = [p for p, f in found if (TCPFlag.SYN | TCPFlag.ACK) in f][:numopen]
        closed = [p for p, f in found if TCPFlag.RST in f][:numclosed]
        chosen[t] = tuple(sorted(opened + closed))
    return chosen


def run(cfg: Config) -> int:
    """Probe, capture, write `cfg.write` and its `.json` sidecar. Returns the exit status (0, 130, 143)."""
    stop = Stop()
    routes = {t: egress(t, cfg.interface) for t in cfg.targets}
    interfaces = sorted({name for name, _ in routes.values()})
    if len(interfaces) > 1:
        raise AgentError(f"targets leave by different interfaces ({', '.join(interfaces)}); probe them apart")
    sources = {t: src for t, (_, src) in routes.items()}
    try:
        cap = Capture(interfaces[0])
        sender = Sender({t.version for t in cfg.targets}, cfg.interface)
    except PermissionError:
        why = "no privileges for raw sockets: use sudo or grant CAP_NET_RAW (agent/README.md)"
        raise AgentError(why) from None
    privs.drop(cfg.user)  # the sockets stay open; nothing below needs privileges
    try:
        pcap, meta = AtomicFile(cfg.write), AtomicFile(cfg.write + ".json")
    except OSError as e:
        raise AgentError(f"cannot write {cfg.write}: {e.strerror}") from None
    try:
        rng = random.SystemRandom()  # source ports and ISNs must not be predictable
        started = time.time()
        if cfg.ports:
            ports = {t: cfg.ports for t in cfg.targets}
        else:
            ports = {t: p for t, p in discover(cap, sender, cfg, sources, stop, rng).items() if p}
        if not ports and not stop.signum:
            raise AgentError("discovery found no open or closed port on any target; pass --ports")
        probes = plan(ports, cfg.numtrips, rng)
        after = gaps(len(probes), cfg.delay_s, rng)
        write_header(pcap.file, cap.linktype)
        frames: list[int] = []  # kernel stamps of what was written, for the summary

        def keep(frame: Frame) -> None:
            write_record(pcap.file, frame.ts_ns, frame.data)
            frames.append(frame.ts_ns)

        sent, late_s = exchange(cap, sender, probes, after, cfg, sources, stop, keep)
        side = {"tool": "synlens-agent", "format": 1, "argv": sys.argv[1:], "started_unix": started,
                "config": asdict(cfg) | {"targets": list(map(str, cfg.targets))},
                "interface": interfaces[0], "linktype": cap.linktype,
                "sources": {str(t): str(s) for t, s in sources.items()},
                "ports": {str(t): list(p) for t, p in ports.items()}, "discovery": cfg.ports is None,
                "plan_columns": ["trip", "target", "port", "sport", "seq", "gap_after_s"],
                "plan": [[p.trip, str(p.target), p.port, p.sport, p.seq, round(g, 9)]
                         for p, g in zip(probes, after)],
                "sent": sent, "frames": len(frames), "late_max_ms": round(late_s * 1000, 3),
                "kernel_drops": cap.drops(),
                "interrupted_by": signal.Signals(stop.signum).name if stop.signum else None}
        meta.file.write(json.dumps(side).encode())
        pcap.commit()
        meta.commit()
    except BaseException:
        pcap.discard()
        meta.discard()
        raise
    finally:
        cap.close()
        sender.close()
    if stop.signum:
        print(f"synlens-agent: stopped by {signal.Signals(stop.signum).name}: {sent} of {len(probes)} probes "
              f"sent, {len(frames)} frames written to {cfg.write}", file=sys.stderr)
        return 128 + stop.signum
    return 0
