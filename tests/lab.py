"""A NAT gateway lab in network namespaces, for tests, benchmarks and sample captures.

Topology (one-way delay ``delay_ms`` on each wire through the delay namespace)::

    {p}-scan            {p}-gw                       {p}-delay                  {p}-inner
    scan0 10.77.1.2 --- gw-scan 10.77.1.1 (target)
                        gw-inner 10.77.2.1 --- dly-gw ~~delayline~~ dly-inner --- inner0 10.77.2.2
                        gw-inner2 10.77.3.1 -- dly-gw2 ~~delayline~~ dly-inner2 -- inner0 10.77.3.2
                                                                               ({p}-inner2, two_inner=True)

With ``ipv6=True`` every 10.77.N.H also has fd77:N::H. The gateway answers
``local_ports`` itself and DNATs ``forwarded_ports`` (nft) to the inner host(s), whose
default route points back at the gateway, so no SNAT is needed and replies cross the
gateway again (TTL 63 instead of 64). ``inner_same_segment=True`` wires the inner hosts
straight to the gateway with no delay namespace: RTT can then not tell them apart, TTL can.

Ports (TCP unless named UDP):

=================  =================  ==========================================
local_ports        22, 80             listeners in the gateway
forwarded_ports    443, 3306, 8080    DNAT to inner (two_inner: 443, 8080 -> inner, 3306 -> inner2)
closed_ports       23, 25             no listener: the gateway answers RST
dropped_port       135                nft drop in the gateway (TCP and UDP)
rejected_port      139                nft reject, ICMP admin-prohibited (type 3 code 13)
udp_local_ports    53                 UDP listener in the gateway, replies with its banner
udp_forwarded_ports 161               DNAT to inner, replies with its banner
udp_closed_ports   69                 ICMP port unreachable (icmp_ratelimit=0)
=================  =================  ==========================================

Every TCP listener sends a one-line banner naming its host ("gw", "inner", "inner2") and
closes; UDP listeners reply with the same banner. Neighbour entries are static, so
captures hold no ARP/ND. Use from scripts with ``sys.path.insert(0, "<repo>/tests")``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_LOCAL_PORTS = (22, 80)
DEFAULT_FORWARDED_PORTS = (443, 3306, 8080)
CLOSED_PORTS = (23, 25)
DROPPED_PORT = 135
REJECTED_PORT = 139
UDP_LOCAL_PORTS = (53,)
UDP_FORWARDED_PORTS = (161,)
UDP_CLOSED_PORTS = (69,)

SCANNER_IFACE = "scan0"
DELAYLINE = Path(__file__).with_name("delayline.py")
SLOWER = 3.0  # NatLab.slow_down: the delay line's delay from then on, as a multiple of its first
ROLES = ("scan", "gw", "delay", "inner", "inner2")
STARTUP_TIMEOUT_S = 10.0
NFT_TABLE = "synlens_lab"

# Banner servers: one process per namespace serving every port. Prints "ready" once all
# sockets are bound, so the lab never races its own listeners. Arguments: banner, TCP ports,
# UDP ports, "1" to listen on IPv6 too, and optionally "1" to answer UDP 53 like a DNS server
# (the query echoed with QR/RA set and rcode NXDOMAIN) rather than with the banner.
BANNER_SERVER_SRC = r"""
import selectors, socket, sys
banner = sys.argv[1].encode() + b"\n"
tcp_ports = [int(p) for p in sys.argv[2].split(",") if p]
udp_ports = [int(p) for p in sys.argv[3].split(",") if p]
families = [socket.AF_INET] + ([socket.AF_INET6] if sys.argv[4] == "1" else [])
dns = len(sys.argv) > 5 and sys.argv[5] == "1"
sel = selectors.DefaultSelector()
for fam in families:
    for kind, ports in ((socket.SOCK_STREAM, tcp_ports), (socket.SOCK_DGRAM, udp_ports)):
        for port in ports:
            s = socket.socket(fam, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(("", port))
            if kind == socket.SOCK_STREAM:
                s.listen(4096)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, kind)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        try:
            if key.data == socket.SOCK_STREAM:
                conn, _ = s.accept()
                conn.sendall(banner)
                conn.close()
            else:
                data, peer = s.recvfrom(65535)
                if dns and s.getsockname()[1] == 53 and len(data) >= 12:
                    reply = data[:2] + bytes([0x80 | (data[2] & 0x79), 0x83]) + data[4:]
                else:
                    reply = banner
                s.sendto(reply, peer)
        except OSError:
            pass
"""

# Runs in the scanner namespace after the build: proves every open port answers from the
# host it should (and warms nothing: neighbours are static), before anyone captures.
_VERIFY_SRC = r"""
import json, socket, sys
out = {}
for host, port, proto in json.loads(sys.argv[1]):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if proto == "tcp":
            with socket.create_connection((host, port), timeout=3) as s:
                reply = s.recv(64)
        else:
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.sendto(b"hello", (host, port))
                reply = s.recv(64)
        out[f"{proto}/{host}/{port}"] = reply.decode().strip()
    except OSError as e:
        out[f"{proto}/{host}/{port}"] = f"error: {e}"
print(json.dumps(out))
"""


class LabError(RuntimeError):
    """The lab could not be built or a lab helper failed."""


class LabCommandError(subprocess.CalledProcessError):
    """CalledProcessError whose message carries the command's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {(self.stderr or '').strip()}"


# ---------------------------------------------------------------------------- processes


class _LineWatcher:
    """Drains a child's text stream on a thread; signals when a wanted line appears."""

    def __init__(self, stream, needle: str) -> None:
        self.lines: list[str] = []
        self.found = threading.Event()
        self.closed = threading.Event()
        self._needle = needle
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if self._needle in line:
                self.found.set()
        self.closed.set()

    def wait(self, timeout: float) -> bool:
        """True once the needle was seen; False on EOF (child died) or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.found.wait(0.01):
                return True
            if self.closed.is_set():
                return self.found.is_set()
        return False

    def join(self, timeout: float = 2.0) -> None:
        self._thread.join(timeout)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 3.0) -> None:
    """Signal the child's process group, escalating to SIGKILL; always reaps."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class _Processes:
    """Every long-running process a lab started, so teardown can stop them by PID."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self.delay_line: subprocess.Popen | None = None

    def start(self, ns: str, *cmd: str, ready: str | None = None) -> subprocess.Popen:
        """Start `cmd` in `ns` in its own session; with `ready`, wait for that stdout line."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if ready else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if ready else subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # own process group: killpg reaches its children too
        )
        with self._lock:
            self._procs.append(proc)
        if ready is not None:
            watcher = _LineWatcher(proc.stdout, ready)
            if not watcher.wait(STARTUP_TIMEOUT_S):
                _stop(proc)
                output = "\n".join(watcher.lines)
                raise LabError(f"{shlex.join(cmd)} in {ns} did not become ready:\n{output}")
        return proc

    def stop_all(self) -> None:
        with self._lock:
            procs, self._procs = self._procs, []
        for proc in reversed(procs):
            _stop(proc)


def _run(cmd: Sequence[str], *, timeout: float = 30, check: bool = True, input: str | None = None):
    result = subprocess.run(
        list(cmd), check=False, capture_output=True, text=True, timeout=timeout, input=input
    )
    if check and result.returncode != 0:
        raise LabCommandError(result.returncode, list(cmd), result.stdout, result.stderr)
    return result


def _ip_batch(ns: str, lines: Sequence[str]) -> None:
    """Run many `ip` commands in one namespace with a single process."""
    _run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")


def _sh(ns: str, commands: Sequence[Sequence[str]]) -> None:
    """Run several commands in `ns` through one `ip netns exec` (saves ~5 ms each)."""
    script = "\n".join(shlex.join(c) for c in commands)
    _run(["ip", "netns", "exec", ns, "sh", "-ec", script])


# ---------------------------------------------------------------------------- namespaces


def _list_netns() -> list[str]:
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _delete_netns(name: str) -> None:
    """Kill what still runs inside `name` (processes of an earlier lab), then delete it."""
    pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _run(["ip", "netns", "del", name], check=False)


def _remove_lab(prefix: str) -> None:
    existing = set(_list_netns())
    for role in ROLES:
        if f"{prefix}-{role}" in existing:
            _delete_netns(f"{prefix}-{role}")


def remove_orphan_labs(stem: str, roles: Sequence[str] = ROLES) -> list[str]:
    """Delete labs named ``{stem}{pid}[tag]-{role}`` (a role of `roles`) whose creating process `pid` is gone.

    Test sessions name their lab after their PID so concurrent sessions never share one;
    this sweeps labs left by sessions that were killed before their teardown ran.
    Returns the namespaces removed.
    """
    removed = []
    # A tag after the PID (several labs per session) must start with a letter.
    pattern = re.compile(rf"^{re.escape(stem)}(\d+)(?:[A-Za-z_]\w*)?-(?:{'|'.join(roles)})$")
    for name in _list_netns():
        match = pattern.match(name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _delete_netns(name)
            removed.append(name)
    return removed


@functools.cache
def lab_available() -> tuple[bool, str]:
    """(True, "") when this process can build labs; else (False, why not)."""
    if os.geteuid() != 0:
        return False, "needs root (network namespaces)"
    missing = [tool for tool in ("ip", "nft", "tcpdump", "ethtool") if shutil.which(tool) is None]
    if missing:
        return False, f"missing tools: {', '.join(missing)}"
    probe = f"slprobe{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
        _run(["ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe"])
        _run(["ip", "netns", "exec", probe, "tcpdump", "-D"])
    except (LabCommandError, OSError, subprocess.TimeoutExpired) as e:
        return False, f"namespace/nft/tcpdump check failed: {e}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return True, ""


@contextlib.contextmanager
def standing(lab: NamespaceLab, build: Callable[[], None], what: str) -> Iterator[NamespaceLab]:
    """Build `lab` (its `prefix` 1-20 letters, digits or '_') with `build`, first deleting namespaces of its
    names left from an earlier run; yield it; stop its processes and delete its namespaces however the body
    ends."""
    if not re.fullmatch(r"[A-Za-z0-9_]{1,20}", lab.prefix):
        raise ValueError(f"lab prefix must be 1-20 letters, digits or '_': {lab.prefix!r}")
    existing = set(_list_netns())
    for ns in lab.namespaces:
        if ns in existing:
            _delete_netns(ns)
    started = time.monotonic()
    try:
        build()
        log.info("%s %s built in %.2f s", what, lab.prefix, time.monotonic() - started)
        yield lab
    finally:
        lab._processes.stop_all()
        for ns in lab.namespaces:
            _delete_netns(ns)


# ---------------------------------------------------------------------------- the lab


@dataclass
class Capture:
    """A running or finished tcpdump; counters are filled in when it stops."""

    path: str
    packets_captured: int | None = None
    packets_dropped: int | None = None


class NamespaceLab:
    """What every lab of namespaces does: run a command in one, start a background process in one (stopped
    at teardown). Mixed into the lab dataclasses, which hold the `_processes` registry."""

    _processes: _Processes

    def run(
        self, ns: str, *cmd: str, timeout: float = 120, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run `cmd` in namespace `ns`, capturing text output; raises LabCommandError."""
        return _run(["ip", "netns", "exec", ns, *cmd], timeout=timeout, check=check, input=input)

    def spawn(self, ns: str, *cmd: str, ready: str | None = None) -> subprocess.Popen:
        """Start a background process in `ns` that the lab stops at teardown.

        With `ready`, blocks until the process prints a line containing it (stdout and
        stderr are then piped); otherwise its output is discarded.
        """
        return self._processes.start(ns, *cmd, ready=ready)


@contextlib.contextmanager
def tcpdump(ns: str, iface: str, path: str | os.PathLike, *, settle_s: float, buffer_kib: int = 8192
            ) -> Iterator[Capture]:
    """tcpdump on `iface` in `ns` (both directions) for the with-block.

    Starts before the block and waits until tcpdump is listening; after the block it waits `settle_s`
    for late replies, then stops tcpdump with SIGINT and waits until the file is complete. Yields a
    Capture whose counters are set on exit.
    """
    cap = Capture(str(path))
    cmd = [
        "ip", "netns", "exec", ns,
        "tcpdump", "-i", iface, "-n", "-U", "-w", cap.path,
        "-Z", "root",  # Debian's tcpdump drops to user tcpdump, which can't write to root's dirs
        "--immediate-mode",  # otherwise the last ring block can be lost on SIGINT
        "-B", str(buffer_kib),  # KiB: headroom for benchmark-rate scans
        "-s", "2048",  # immediate mode gives snaplen-sized ring slots: 256 KiB slots leave too few
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    watcher = _LineWatcher(proc.stderr, "listening on")
    try:
        if not watcher.wait(STARTUP_TIMEOUT_S):
            raise LabError("tcpdump did not start:\n" + "\n".join(watcher.lines))
        yield cap
        time.sleep(settle_s)
        if proc.poll() is not None:  # died mid-capture: the file silently lacks the tail
            raise LabError(f"tcpdump exited early ({proc.returncode}) writing {cap.path}")
    finally:
        _stop(proc, signal.SIGINT, timeout=5.0)
        watcher.join()
        _read_tcpdump_stats(cap, watcher.lines)
    if cap.packets_dropped:
        log.warning("tcpdump dropped %d packets writing %s", cap.packets_dropped, cap.path)


@dataclass(frozen=True)
class NatLab(NamespaceLab):
    """A built lab (see the module docstring for topology and ports). IPv4 unless named 6.

    `target` is the scan target (the gateway); capture on `scanner_iface` in `scanner_ns`.
    Every port list is sorted. Valid only inside its `nat_lab` block.
    """

    prefix: str
    scanner_ns: str
    scanner_iface: str
    scanner_addr: str
    target: str
    target6: str | None
    local_ports: tuple[int, ...]
    forwarded_ports: tuple[int, ...]
    closed_ports: tuple[int, ...]
    dropped_port: int
    rejected_port: int
    udp_local_ports: tuple[int, ...]
    udp_forwarded_ports: tuple[int, ...]
    udp_closed_ports: tuple[int, ...]
    gateway_ns: str
    delay_ns: str | None  # None when inner_same_segment
    inner_ns: tuple[str, ...]  # one or two inner hosts
    inner_addrs: tuple[str, ...]  # IPv4 of each inner host, same order
    forwarded_to: tuple[tuple[int, str], ...]  # (forwarded TCP port, inner IPv4)
    delay_ms: float  # one-way delay of the delay line; 0 when there is none
    scanner_addr6: str | None = None
    _processes: _Processes = field(default_factory=_Processes, repr=False, compare=False, hash=False)

    @property
    def namespaces(self) -> tuple[str, ...]:
        delay = (self.delay_ns,) if self.delay_ns else ()
        return (self.scanner_ns, self.gateway_ns, *delay, *self.inner_ns)

    @property
    def open_ports(self) -> tuple[int, ...]:
        return tuple(sorted(self.local_ports + self.forwarded_ports))

    @property
    def udp_open_ports(self) -> tuple[int, ...]:
        return tuple(sorted(self.udp_local_ports + self.udp_forwarded_ports))

    def machines(self) -> tuple[tuple[int, ...], ...]:
        """TCP ports grouped by the host that answers them (gateway first, closed ports included)."""
        gateway = tuple(sorted(self.local_ports + self.closed_ports))
        inner = tuple(
            tuple(sorted(p for p, addr in self.forwarded_to if addr == inner_addr))
            for inner_addr in self.inner_addrs
        )
        return (gateway, *(ports for ports in inner if ports))

    def rtt_families(self) -> tuple[tuple[int, ...], ...]:
        """The TCP port groups an RTT analysis can tell apart in this lab.

        Local and closed ports (answered by the gateway kernel) against every forwarded
        port; inner hosts sit at the same delay, so they share one family. Without a delay
        line everything is one family.
        """
        gateway = tuple(sorted(self.local_ports + self.closed_ports))
        if self.delay_ns is None:
            return (tuple(sorted(gateway + self.forwarded_ports)),)
        return (gateway, tuple(sorted(self.forwarded_ports)))

    def slow_down(self) -> None:
        """From now on the delay line holds each frame SLOWER times as long (once; frames already in the line
        keep their due times): the forwarded ports' RTT steps up mid-scan, as a path's does under load."""
        line = self._processes.delay_line
        if line is None:
            raise LabError("this lab has no delay line")
        os.kill(line.pid, signal.SIGUSR1)  # (ip netns exec execs the line's python in place: its pid is this)

    def reforward(self, forwarded_to: Mapping[int, str | None]) -> NatLab:
        """The lab with TCP ports answered elsewhere from now on: `forwarded_to` maps a port of `open_ports`
        to the inner address it is DNATed to, or None for the gateway to answer it itself (ports not named keep
        their place). A port's new owner gets a listener if it has none (a banner server of its own, stopped at
        teardown: the old owner's stays, unreached); the gateway's DNAT is replaced in one nft transaction; every
        open port is checked to answer from its new owner before this returns. Returns the lab as now wired (its
        processes are this lab's, torn down with it)."""
        unknown = set(forwarded_to) - set(self.open_ports)
        if unknown or not {v for v in forwarded_to.values() if v} <= set(self.inner_addrs):
            raise ValueError(f"ports {sorted(unknown)} are not open, or an address is not an inner host's")
        owner = {p: None for p in self.local_ports} | dict(self.forwarded_to) | dict(forwarded_to)
        namespace = {None: self.gateway_ns} | dict(zip(self.inner_addrs, self.inner_ns))
        banner = {None: "gw"} | {a: "inner" if i == 0 else f"inner{i + 1}" for i, a in enumerate(self.inner_addrs)}
        for addr in {owner[p] for p in forwarded_to}:
            listening = set(map(int, re.findall(r":(\d+)\s", self.run(namespace[addr], "ss", "-Hltn").stdout)))
            missing = sorted(p for p in forwarded_to if owner[p] == addr and p not in listening)
            if missing:
                self.spawn(namespace[addr], sys.executable, "-c", BANNER_SERVER_SRC, banner[addr],
                           ",".join(map(str, missing)), "", "1" if self.target6 else "0", ready="ready")
        forwarded = tuple(sorted((p, a) for p, a in owner.items() if a))
        wired = replace(self, local_ports=tuple(sorted(p for p, a in owner.items() if a is None)),
                        forwarded_ports=tuple(p for p, _ in forwarded), forwarded_to=forwarded)
        _run(["ip", "netns", "exec", self.gateway_ns, "nft", "-f", "-"],
             input=f"delete table inet {NFT_TABLE}\n" + _ruleset(wired))
        _verify(wired)
        return wired

    def capture(self, path: str | os.PathLike, *, settle_s: float = 0.05) -> contextlib.AbstractContextManager[Capture]:
        """tcpdump on the scanner interface (both directions) for the with-block; `settle_s` waits for
        replies still in the delay line."""
        return tcpdump(self.scanner_ns, self.scanner_iface, path, settle_s=settle_s)


def _read_tcpdump_stats(cap: Capture, stderr_lines: list[str]) -> None:
    for line in stderr_lines:
        if m := re.match(r"(\d+) packets captured", line):
            cap.packets_captured = int(m.group(1))
        elif m := re.match(r"(\d+) packets dropped by kernel", line):
            cap.packets_dropped = int(m.group(1))


# ---------------------------------------------------------------------------- reading captures

_TSHARK_FIELDS = (
    "frame.time_epoch", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ip.ttl", "ipv6.hlim",
    "tcp.srcport", "tcp.dstport", "tcp.flags", "icmp.type", "icmp.code", "icmpv6.type", "icmpv6.code",
)  # fmt: skip
TCP_SYN, TCP_RST, TCP_SYN_ACK = 0x02, 0x04, 0x12


@dataclass(frozen=True)
class ProbeReply:
    """One SYN probe to the target seen in a capture, and what came back first."""

    port: int  # destination port probed
    sport: int  # the probe's source port
    sent_s: float  # capture timestamp, seconds since the epoch
    reply: str | None  # "SA" (SYN-ACK), "RA"/"R" (reset), "icmp3/13", "icmpv6 1/1", or None
    rtt_ms: float | None
    ttl: int | None  # IPv4 TTL / IPv6 hop limit of the reply


def _tshark_rows(pcap: str | os.PathLike) -> list[dict[str, str]]:
    cmd = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]
    for name in _TSHARK_FIELDS:
        cmd += ["-e", name]
    out = _run(cmd, timeout=120).stdout
    return [dict(zip(_TSHARK_FIELDS, line.split("\t"))) for line in out.splitlines()]


def _reply_kind(row: dict[str, str]) -> str:
    if row["icmp.type"]:
        return f"icmp{row['icmp.type']}/{row['icmp.code']}"
    if row["icmpv6.type"]:
        return f"icmpv6 {row['icmpv6.type']}/{row['icmpv6.code']}"
    flags = int(row["tcp.flags"], 16)
    if flags & TCP_SYN_ACK == TCP_SYN_ACK:
        return "SA"
    return "RA" if flags & 0x10 else "R"


def probe_replies(pcap: str | os.PathLike, target: str) -> list[ProbeReply]:
    """Pair every SYN sent to `target` (IPv4 or IPv6) with the first reply for its ports.

    A reply is a TCP segment from the target to the probe's source port, or an ICMP error
    from the target quoting the probe. Reads the capture with tshark; probes in time order.
    """
    probes: list[dict] = []
    waiting: dict[tuple[int, int], list[dict]] = {}
    for row in _tshark_rows(pcap):
        src, dst = row["ip.src"] or row["ipv6.src"], row["ip.dst"] or row["ipv6.dst"]
        if not row["tcp.srcport"]:
            continue
        key = (int(row["tcp.srcport"]), int(row["tcp.dstport"]))
        is_icmp = bool(row["icmp.type"] or row["icmpv6.type"])
        if dst == target and not is_icmp and int(row["tcp.flags"], 16) == TCP_SYN:
            probe = {"key": key, "sent_s": float(row["frame.time_epoch"]), "reply": None}
            probes.append(probe)
            waiting.setdefault(key, []).append(probe)
        elif src == target:
            # An ICMP error quotes the probe as sent; a TCP reply swaps the ports.
            queue = waiting.get(key if is_icmp else key[::-1])
            if queue:
                queue.pop(0)["reply"] = row
    return [_probe_reply(p) for p in probes]


def _probe_reply(probe: dict) -> ProbeReply:
    sport, port = probe["key"]
    row = probe["reply"]
    if row is None:
        return ProbeReply(port, sport, probe["sent_s"], None, None, None)
    rtt_ms = (float(row["frame.time_epoch"]) - probe["sent_s"]) * 1e3
    ttl = int(row["ip.ttl"] or row["ipv6.hlim"])
    return ProbeReply(port, sport, probe["sent_s"], _reply_kind(row), rtt_ms, ttl)


# ---------------------------------------------------------------------------- building


@dataclass(frozen=True)
class _Subnet:
    """Subnet N of the lab: the gateway is host 1, its neighbour host 2."""

    n: int

    def v4(self, host: int) -> str:
        return f"10.77.{self.n}.{host}"

    def v6(self, host: int) -> str:
        return f"fd77:{self.n}::{host}"

    def mac(self, host: int, hop: int = 0) -> str:
        # Fixed MACs keep captures reproducible and allow static neighbour entries.
        return f"02:77:{self.n:02x}:00:{hop:02x}:{host:02x}"


SCAN_NET = _Subnet(1)
INNER_NETS = (_Subnet(2), _Subnet(3))


def _veth(ns_a: str, if_a: str, mac_a: str, ns_b: str, if_b: str, mac_b: str) -> None:
    # Both ends are created directly inside their namespaces: nothing ever appears in
    # the root namespace, so a crashed build leaves no stray links behind.
    _run([
        "ip", "link", "add", "name", if_a, "address", mac_a, "netns", ns_a,
        "type", "veth", "peer", "name", if_b, "address", mac_b, "netns", ns_b,
    ])  # fmt: skip


def _offload_off(ns: str, ifaces: Sequence[str]) -> None:
    # Frames copied by the delay line must carry real checksums; turning offload off on
    # every veth also makes captured frames carry valid checksums.
    _sh(ns, [["ethtool", "-K", iface, "tx", "off"] for iface in ifaces])


def _addr_lines(iface: str, net: _Subnet, host: int, peer_mac: str, ipv6: bool) -> list[str]:
    """Bring `iface` up as host `host` of `net` with a static neighbour entry for the peer."""
    peer = 3 - host
    lines = [
        f"link set {iface} up",
        f"addr add {net.v4(host)}/24 dev {iface}",
        f"neigh replace {net.v4(peer)} lladdr {peer_mac} dev {iface} nud permanent",
    ]
    if ipv6:
        lines += [
            f"addr add {net.v6(host)}/64 dev {iface} nodad",
            f"neigh replace {net.v6(peer)} lladdr {peer_mac} dev {iface} nud permanent",
        ]
    return lines


def _sysctls(ns: str, ipv6: bool, extra: Sequence[str] = ()) -> None:
    # Disabling IPv6 when unused keeps router solicitations and MLD out of captures;
    # default.* must be set before the veths are created so they inherit it.
    settings = list(extra)
    if ipv6:
        settings += ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]
    else:
        settings += ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
    _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *settings])


def _nft_ruleset(
    target: str,
    target6: str | None,
    tcp_dnat: dict[str, list[int]],
    udp_dnat: dict[str, list[int]],
    inner6: dict[str, str],
    dropped: int,
    rejected: int,
) -> str:
    def ports(ps: list[int]) -> str:
        return "{ " + ", ".join(map(str, ps)) + " }"

    dnat = []
    for proto, by_host in (("tcp", tcp_dnat), ("udp", udp_dnat)):
        for inner, ps in by_host.items():
            if not ps:
                continue
            dnat.append(f"ip daddr {target} {proto} dport {ports(ps)} dnat ip to {inner}")
            if target6:
                dnat.append(f"ip6 daddr {target6} {proto} dport {ports(ps)} dnat ip6 to {inner6[inner]}")
    nl = "\n        "
    return f"""
table inet {NFT_TABLE} {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        {nl.join(dnat)}
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        meta l4proto {{ tcp, udp }} th dport {dropped} drop
        meta nfproto ipv4 meta l4proto {{ tcp, udp }} th dport {rejected} reject with icmp type admin-prohibited
        meta nfproto ipv6 meta l4proto {{ tcp, udp }} th dport {rejected} reject with icmpv6 type admin-prohibited
    }}
}}
"""


def _split_forwarded(ports: Sequence[int], inner_addrs: Sequence[str]) -> tuple[tuple[int, str], ...]:
    """Deal forwarded ports round-robin over the inner hosts (sorted, so it is stable)."""
    return tuple((port, inner_addrs[i % len(inner_addrs)]) for i, port in enumerate(sorted(ports)))


def _validate_ports(local: Sequence[int], forwarded: Sequence[int]) -> None:
    special = set(CLOSED_PORTS) | {DROPPED_PORT, REJECTED_PORT}
    if set(local) & set(forwarded) or (set(local) | set(forwarded)) & special:
        raise ValueError(
            f"local {local} and forwarded {forwarded} ports must be disjoint from each "
            f"other and from closed/dropped/rejected {sorted(special)}"
        )


def _build(lab: NatLab, *, ipv6: bool, same_segment: bool) -> None:
    scan, gw = lab.scanner_ns, lab.gateway_ns
    for ns in lab.namespaces:
        _run(["ip", "netns", "add", ns])
    _sysctls(scan, ipv6)
    gw_sysctls = ["net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0"]
    if ipv6:
        gw_sysctls += ["net.ipv6.conf.all.forwarding=1", "net.ipv6.icmp.ratelimit=0"]
    _sysctls(gw, ipv6, gw_sysctls)
    if lab.delay_ns:
        _sysctls(lab.delay_ns, ipv6=False)  # a wire: no addresses, no stack of its own
    for ns in lab.inner_ns:
        _sysctls(ns, ipv6, ["net.ipv4.icmp_ratelimit=0"] + (["net.ipv6.icmp.ratelimit=0"] if ipv6 else []))

    # scanner <-> gateway
    _veth(scan, SCANNER_IFACE, SCAN_NET.mac(2), gw, "gw-scan", SCAN_NET.mac(1))
    _ip_batch(scan, ["link set lo up", *_addr_lines(SCANNER_IFACE, SCAN_NET, 2, SCAN_NET.mac(1), ipv6)])
    gw_lines = ["link set lo up", *_addr_lines("gw-scan", SCAN_NET, 1, SCAN_NET.mac(2), ipv6)]
    gw_ifaces = ["gw-scan"]
    delay_pairs: list[str] = []

    # gateway <-> each inner host, through the delay namespace unless same_segment
    for i, inner_ns in enumerate(lab.inner_ns):
        net, suffix = INNER_NETS[i], "" if i == 0 else str(i + 1)
        gw_if = f"gw-inner{suffix}"
        if same_segment:
            _veth(gw, gw_if, net.mac(1), inner_ns, "inner0", net.mac(2))
        else:
            dly_gw, dly_inner = f"dly-gw{suffix}", f"dly-inner{suffix}"
            _veth(gw, gw_if, net.mac(1), lab.delay_ns, dly_gw, net.mac(1, hop=1))
            _veth(lab.delay_ns, dly_inner, net.mac(2, hop=1), inner_ns, "inner0", net.mac(2))
            delay_pairs.append(f"{dly_gw}:{dly_inner}")
        gw_ifaces.append(gw_if)
        gw_lines += _addr_lines(gw_if, net, 1, net.mac(2), ipv6)
        inner_lines = ["link set lo up", *_addr_lines("inner0", net, 2, net.mac(1), ipv6)]
        inner_lines.append(f"route add default via {net.v4(1)}")
        if ipv6:
            inner_lines.append(f"route add ::/0 via {net.v6(1)}")
        _ip_batch(inner_ns, inner_lines)
        _offload_off(inner_ns, ["inner0"])
    _ip_batch(gw, gw_lines)
    _offload_off(gw, gw_ifaces)
    _offload_off(scan, [SCANNER_IFACE])
    if lab.delay_ns:
        dly_ifaces = [iface for pair in delay_pairs for iface in pair.split(":")]
        _ip_batch(lab.delay_ns, [f"link set {iface} up" for iface in dly_ifaces])
        _offload_off(lab.delay_ns, dly_ifaces)

    _install_nft(lab)
    _start_servers(lab, ipv6)
    if lab.delay_ns:
        lab._processes.delay_line = lab.spawn(
            lab.delay_ns,
            sys.executable,
            str(DELAYLINE),
            "--delay-ms",
            str(lab.delay_ms),
            "--then-delay-ms",
            str(SLOWER * lab.delay_ms),
            *delay_pairs,
            ready="ready",
        )
    _verify(lab)


def _install_nft(lab: NatLab) -> None:
    _run(["ip", "netns", "exec", lab.gateway_ns, "nft", "-f", "-"], input=_ruleset(lab))


def _ruleset(lab: NatLab) -> str:
    """The gateway's nft table for the lab's forwards."""
    tcp_dnat: dict[str, list[int]] = {addr: [] for addr in lab.inner_addrs}
    for port, addr in lab.forwarded_to:
        tcp_dnat[addr].append(port)
    udp_dnat = {lab.inner_addrs[0]: list(lab.udp_forwarded_ports)}
    inner6 = {addr: INNER_NETS[i].v6(2) for i, addr in enumerate(lab.inner_addrs)}
    return _nft_ruleset(
        lab.target, lab.target6, tcp_dnat, udp_dnat, inner6, lab.dropped_port, lab.rejected_port
    )


def _start_servers(lab: NatLab, ipv6: bool) -> None:
    def start(ns: str, banner: str, tcp: Sequence[int], udp: Sequence[int]) -> None:
        lab.spawn(
            ns,
            sys.executable,
            "-c",
            BANNER_SERVER_SRC,
            banner,
            ",".join(map(str, tcp)),
            ",".join(map(str, udp)),
            "1" if ipv6 else "0",
            ready="ready",
        )

    start(lab.gateway_ns, "gw", lab.local_ports, lab.udp_local_ports)
    for i, (ns, addr) in enumerate(zip(lab.inner_ns, lab.inner_addrs)):
        tcp = [p for p, to in lab.forwarded_to if to == addr]
        start(ns, "inner" if i == 0 else f"inner{i + 1}", tcp, lab.udp_forwarded_ports if i == 0 else ())


def expected_banners(lab: NatLab) -> dict[str, str]:
    """``{"tcp/<addr>/<port>": banner}`` for every open port the scanner can reach."""
    owner = {p: ("inner" if addr == lab.inner_addrs[0] else "inner2") for p, addr in lab.forwarded_to}
    owner |= {p: "gw" for p in lab.local_ports}
    udp_owner = {p: "gw" for p in lab.udp_local_ports} | {p: "inner" for p in lab.udp_forwarded_ports}
    expected = {}
    for target in filter(None, (lab.target, lab.target6)):
        expected |= {f"tcp/{target}/{p}": host for p, host in owner.items()}
        expected |= {f"udp/{target}/{p}": host for p, host in udp_owner.items()}
    return expected


def _verify(lab: NatLab) -> None:
    expected = expected_banners(lab)
    probes = [key.split("/") for key in expected]
    probes = [(host, int(port), proto) for proto, host, port in probes]
    out = lab.run(lab.scanner_ns, sys.executable, "-c", _VERIFY_SRC, json.dumps(probes), timeout=30)
    got = json.loads(out.stdout)
    wrong = {k: (v, got.get(k)) for k, v in expected.items() if got.get(k) != v}
    if wrong:
        raise LabError(f"lab {lab.prefix} answers wrongly (expected, got): {wrong}")


@contextlib.contextmanager
def nat_lab(
    prefix: str,
    *,
    delay_ms: float = 1.0,
    inner_same_segment: bool = False,
    two_inner: bool = False,
    ipv6: bool = False,
    local_ports: Sequence[int] = DEFAULT_LOCAL_PORTS,
    forwarded_ports: Sequence[int] = DEFAULT_FORWARDED_PORTS,
) -> Iterator[NatLab]:
    """Build the NAT lab named `prefix`, yield it, and tear it down however the body ends.

    A stale lab with the same prefix (namespaces and the processes in them) is removed
    first. `delay_ms` is the one-way delay of the line between gateway and inner hosts,
    so forwarded ports answer about 2*delay_ms later than local ones.
    """
    if not re.fullmatch(r"[A-Za-z0-9_]{1,20}", prefix):
        raise ValueError(f"lab prefix must be 1-20 letters, digits or '_': {prefix!r}")
    if delay_ms <= 0 and not inner_same_segment:
        raise ValueError("delay_ms must be positive (use inner_same_segment=True for no delay)")
    _validate_ports(local_ports, forwarded_ports)
    inner_count = 2 if two_inner else 1
    inner_addrs = tuple(net.v4(2) for net in INNER_NETS[:inner_count])
    lab = NatLab(
        prefix=prefix,
        scanner_ns=f"{prefix}-scan",
        scanner_iface=SCANNER_IFACE,
        scanner_addr=SCAN_NET.v4(2),
        target=SCAN_NET.v4(1),
        target6=SCAN_NET.v6(1) if ipv6 else None,
        local_ports=tuple(sorted(local_ports)),
        forwarded_ports=tuple(sorted(forwarded_ports)),
        closed_ports=CLOSED_PORTS,
        dropped_port=DROPPED_PORT,
        rejected_port=REJECTED_PORT,
        udp_local_ports=UDP_LOCAL_PORTS,
        udp_forwarded_ports=UDP_FORWARDED_PORTS,
        udp_closed_ports=UDP_CLOSED_PORTS,
        gateway_ns=f"{prefix}-gw",
        delay_ns=None if inner_same_segment else f"{prefix}-delay",
        inner_ns=(f"{prefix}-inner", f"{prefix}-inner2")[:inner_count],
        inner_addrs=inner_addrs,
        forwarded_to=_split_forwarded(forwarded_ports, inner_addrs),
        delay_ms=0.0 if inner_same_segment else float(delay_ms),
        scanner_addr6=SCAN_NET.v6(2) if ipv6 else None,
    )
    _remove_lab(prefix)
    started = time.monotonic()
    try:
        _build(lab, ipv6=ipv6, same_segment=inner_same_segment)
        log.info("lab %s built in %.2f s", prefix, time.monotonic() - started)
        yield lab
    finally:
        lab._processes.stop_all()
        for ns in lab.namespaces:
            _delete_netns(ns)
