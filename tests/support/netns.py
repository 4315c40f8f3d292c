"""What every namespace lab of the tests shares: its life, the commands it runs, its captures.

A lab is a set of network namespaces named ``{prefix}-{role}`` (nothing touches the root namespace), built by
its subclass of `NamespaceLab` (natlab.NatLab, scanlab.ScanLab, forensiclab.ForensicLab), which declares its
roles, its sensors (where a capture can sit) and its topology (`build`). The base gives each of them the same
lifecycle: `standing()` deletes namespaces of the same names left by an earlier run (and the processes in
them), creates the namespaces, builds, yields the lab, and on every way out stops each process the lab started
(by PID) and deletes its namespaces; `remove_orphans` sweeps labs whose creating process is gone. And the same
means: `run` and `spawn` in a namespace, veths, sysctls, nft tables, banner servers, a check that every
service answers as the topology says, and `capture` (tcpdump at a sensor for a with-block).

Standard library only; needs root (`lab_available` says whether this process can build labs).
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 10.0
PREFIX = re.compile(r"[A-Za-z0-9_]{1,20}")
TOOLS = ("ip", "nft", "tcpdump", "ethtool")  # what building any lab needs
# A quiet target that answers at any rate (NamespaceLab.sysctls(ns, TARGET_SYSCTLS, each=True)).
TARGET_SYSCTLS = (
    "net.ipv6.conf.all.disable_ipv6=1",  # no RS/MLD/ND noise in captures
    "net.ipv6.conf.default.disable_ipv6=1",
    "net.ipv4.icmp_ratelimit=0",
    "net.ipv4.icmp_msgs_per_sec=100000",
    "net.ipv4.icmp_msgs_burst=100000",
)

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


def nft_chain(hook: str, rules: Sequence[str], *, kind: str = "filter", priority: str = "filter") -> str:
    """One base chain named after its `hook` (policy accept) holding `rules`, for `nft_table`."""
    body = "".join(f"\n        {rule}" for rule in rules)
    return f"""
    chain {hook} {{
        type {kind} hook {hook} priority {priority}; policy accept;{body}
    }}"""


def nft_table(name: str, *chains: str, family: str = "inet") -> str:
    """An nft table of `chains` (`nft_chain`), as `NamespaceLab.load_nft` and `NamespaceLab.nft` load it."""
    return f"\ntable {family} {name} {{{''.join(chains)}\n}}\n"


def filtered_port_rules(tcp_dropped: int, udp_dropped: int, tcp_rejected: int, udp_rejected: int) -> list[str]:
    """A target's firewall rules for its filtered ports: the dropped ones silently, the rejected ones with ICMP
    admin-prohibited (type 3 code 13), so that a scan meets both kinds of filtering."""
    return [
        f"tcp dport {tcp_dropped} drop",
        f"udp dport {udp_dropped} drop",
        f"meta nfproto ipv4 tcp dport {tcp_rejected} reject with icmp type admin-prohibited",
        f"meta nfproto ipv4 udp dport {udp_rejected} reject with icmp type admin-prohibited",
    ]


class RoleNamespace:
    """A lab's attribute that is the namespace of one of its roles: ``scanner_ns = RoleNamespace("scan")``."""

    def __init__(self, role: str) -> None:
        self.role = role

    def __get__(self, lab: NamespaceLab | None, owner: type | None = None) -> Any:
        return self if lab is None else lab.ns(self.role)


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


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 3.0) -> None:
    """Signal the child's process group, escalating to SIGKILL after `timeout` s; always reaps."""
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
    """Every long-running process a lab started, so teardown can stop them by PID; `named` holds those a lab
    must find again (its delay line)."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self.named: dict[str, subprocess.Popen] = {}

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
                stop_process(proc)
                output = "\n".join(watcher.lines)
                raise LabError(f"{shlex.join(cmd)} in {ns} did not become ready:\n{output}")
        return proc

    def stop_all(self) -> None:
        with self._lock:
            procs, self._procs = self._procs, []
        for proc in reversed(procs):
            stop_process(proc)


def run(cmd: Sequence[str], *, timeout: float = 30, check: bool = True, input: str | None = None
        ) -> subprocess.CompletedProcess:
    """Run `cmd`, capturing text output; raises LabCommandError (with stderr) when `check` and it fails."""
    result = subprocess.run(
        list(cmd), check=False, capture_output=True, text=True, timeout=timeout, input=input
    )
    if check and result.returncode != 0:
        raise LabCommandError(result.returncode, list(cmd), result.stdout, result.stderr)
    return result


def ip_batch(ns: str, lines: Sequence[str]) -> None:
    """Run many `ip` commands in one namespace with a single process."""
    run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")


def neighbour(address: str, mac: str, iface: str) -> str:
    """The `ip` line of a static neighbour entry: no ARP/ND for it reaches a capture."""
    return f"neigh replace {address} lladdr {mac} dev {iface} nud permanent"


def offload_off(ns: str, ifaces: Sequence[str]) -> None:
    """Checksum offload off on `ifaces` (one `ip netns exec` for all): frames a delay line copies must carry
    real checksums, and so then does every captured frame."""
    script = "\n".join(shlex.join(["ethtool", "-K", iface, "tx", "off"]) for iface in ifaces)
    run(["ip", "netns", "exec", ns, "sh", "-ec", script])


# ---------------------------------------------------------------------------- namespaces


def list_netns() -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def delete_netns(name: str) -> None:
    """Kill what still runs inside `name` (processes of an earlier lab), then delete it."""
    pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    run(["ip", "netns", "del", name], check=False)


def remove_orphan_labs(stem: str, roles: Sequence[str]) -> list[str]:
    """Delete labs named ``{stem}{pid}[tag]-{role}`` (a role of `roles`) whose creating process `pid` is gone.

    Test sessions name their lab after their PID so concurrent sessions never share one;
    this sweeps labs left by sessions that were killed before their teardown ran.
    Returns the namespaces removed.
    """
    removed = []
    # A tag after the PID (several labs per session) must start with a letter.
    pattern = re.compile(rf"^{re.escape(stem)}(\d+)(?:[A-Za-z_]\w*)?-(?:{'|'.join(roles)})$")
    for name in list_netns():
        match = pattern.match(name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            delete_netns(name)
            removed.append(name)
    return removed


@functools.cache
def lab_available() -> tuple[bool, str]:
    """(True, "") when this process can build labs; else (False, why not)."""
    if os.geteuid() != 0:
        return False, "needs root (network namespaces)"
    missing = missing_tools(TOOLS)
    if missing:
        return False, f"missing tools: {', '.join(missing)}"
    probe = f"slprobe{os.getpid()}"
    try:
        run(["ip", "netns", "add", probe])
        run(["ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe"])
        run(["ip", "netns", "exec", probe, "tcpdump", "-D"])
    except (LabCommandError, OSError, subprocess.TimeoutExpired) as e:
        return False, f"namespace/nft/tcpdump check failed: {e}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return True, ""


def missing_tools(tools: Sequence[str]) -> list[str]:
    """The command-line tools of `tools` not installed here."""
    return [tool for tool in tools if shutil.which(tool) is None]


def require(tools: Sequence[str], what: str) -> None:
    """Raise LabError saying why `what`, a lab that drives `tools`, cannot be built here: no namespaces (not
    root, ...) or a tool missing."""
    ok, why = lab_available()
    if not ok:
        raise LabError(f"{what} unavailable: {why}")
    missing = missing_tools(tools)
    if missing:
        raise LabError(f"{what} unavailable: missing tools: {', '.join(missing)}")


# ---------------------------------------------------------------------------- captures


@dataclass
class Capture:
    """A running or finished tcpdump; counters are filled in when it stops."""

    path: str
    packets_captured: int | None = None
    packets_dropped: int | None = None


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
        stop_process(proc, signal.SIGINT, timeout=5.0)
        watcher.join()
        _read_tcpdump_stats(cap, watcher.lines)
    if cap.packets_dropped:
        log.warning("tcpdump dropped %d packets writing %s", cap.packets_dropped, cap.path)


def _read_tcpdump_stats(cap: Capture, stderr_lines: list[str]) -> None:
    for line in stderr_lines:
        if m := re.match(r"(\d+) packets captured", line):
            cap.packets_captured = int(m.group(1))
        elif m := re.match(r"(\d+) packets dropped by kernel", line):
            cap.packets_dropped = int(m.group(1))


# ---------------------------------------------------------------------------- the base


@dataclass(frozen=True, kw_only=True)
class NamespaceLab:
    """A lab of namespaces ``{prefix}-{role}``: the lifecycle and the means every lab shares (module docstring).

    A subclass declares `roles` (every role it may have), `sensors` (capture name -> (role, interface); the
    first is the default), what a capture waits for late replies (`settle_s`) and holds in its buffer, and
    builds its topology in `build` (the namespaces of `namespaces` exist by then). A lab is valid only inside
    `standing()`.
    """

    prefix: str
    _processes: _Processes = field(default_factory=_Processes, repr=False, compare=False, hash=False)

    what: ClassVar[str] = "lab"  # its name in logs and errors
    roles: ClassVar[tuple[str, ...]] = ()
    sensors: ClassVar[Mapping[str, tuple[str, str]]] = {}
    settle_s: ClassVar[float] = 0.05
    buffer_kib: ClassVar[int] = 8192

    def ns(self, role: str) -> str:
        """The namespace of `role`."""
        return f"{self.prefix}-{role}"

    @property
    def namespaces(self) -> tuple[str, ...]:
        """The namespaces this lab builds (every role's, unless a subclass leaves some out)."""
        return tuple(self.ns(role) for role in self.roles)

    def build(self) -> None:
        """The topology: links, addresses, routes, firewall, services; then a check that they answer."""
        raise NotImplementedError

    @contextlib.contextmanager
    def standing(self) -> Iterator[NamespaceLab]:
        """Build this lab, first deleting namespaces of its names left from an earlier run; yield it; stop its
        processes and delete its namespaces however the body ends."""
        if not PREFIX.fullmatch(self.prefix):
            raise ValueError(f"lab prefix must be 1-20 letters, digits or '_': {self.prefix!r}")
        existing = set(list_netns())
        for ns in map(self.ns, self.roles):
            if ns in existing:
                delete_netns(ns)
        started = time.monotonic()
        try:
            for ns in self.namespaces:
                run(["ip", "netns", "add", ns])
            self.build()
            log.info("%s %s built in %.2f s", self.what, self.prefix, time.monotonic() - started)
            yield self
        finally:
            self._processes.stop_all()
            for ns in self.namespaces:
                delete_netns(ns)

    @classmethod
    def remove_orphans(cls, stem: str) -> list[str]:
        """Delete labs of this kind named ``{stem}{pid}[tag]-{role}`` whose creating process is gone."""
        return remove_orphan_labs(stem, cls.roles)

    # ------------------------------------------------------------------------ in a namespace

    def run(
        self, ns: str, *cmd: str, timeout: float = 120, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run `cmd` in namespace `ns`, capturing text output; raises LabCommandError."""
        return run(["ip", "netns", "exec", ns, *cmd], timeout=timeout, check=check, input=input)

    def spawn(self, ns: str, *cmd: str, ready: str | None = None, name: str | None = None) -> subprocess.Popen:
        """Start a background process in `ns` that the lab stops at teardown.

        With `ready`, blocks until the process prints a line containing it (stdout and
        stderr are then piped); otherwise its output is discarded. With `name`, `process(name)` finds it.
        """
        proc = self._processes.start(ns, *cmd, ready=ready)
        if name is not None:
            self._processes.named[name] = proc
        return proc

    def process(self, name: str) -> subprocess.Popen | None:
        """The process started with `spawn(..., name=name)`, if any."""
        return self._processes.named.get(name)

    def stop(self, proc: subprocess.Popen) -> None:
        """Stop one process this lab started (its process group), by its PID, before the lab ends."""
        stop_process(proc, timeout=5.0)

    # ------------------------------------------------------------------------ building

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str, *, mac_a: str | None = None,
             mac_b: str | None = None) -> None:
        """A veth pair `if_a` in `ns_a` -- `if_b` in `ns_b` (a kernel-chosen MAC where none is given)."""
        # Both ends are created directly inside their namespaces: nothing ever appears in
        # the root namespace, so a crashed build leaves no stray links behind.
        def end(iface: str, mac: str | None, ns: str) -> list[str]:
            return ["name", iface, *(["address", mac] if mac else []), "netns", ns]

        run(["ip", "link", "add", *end(if_a, mac_a, ns_a), "type", "veth", "peer", *end(if_b, mac_b, ns_b)])

    def sysctls(self, ns: str, settings: Sequence[str], *, each: bool = False) -> None:
        """Set `settings` ("key=value") in `ns`: in one command, or with `each` one by one, where a key this
        kernel lacks must not stop the rest."""
        if not each:
            self.run(ns, "sysctl", "-q", "-w", *settings, timeout=30)
            return
        for setting in settings:
            self.run(ns, "sysctl", "-q", "-w", setting, timeout=30, check=False)

    def load_nft(self, ns: str, ruleset: str) -> None:
        """Load `ruleset` into `ns` for the lab's life."""
        self.run(ns, "nft", "-f", "-", input=ruleset, timeout=30)

    @contextlib.contextmanager
    def nft(self, ns: str, ruleset: str) -> Iterator[None]:
        """`ruleset` (one table) loaded in `ns` for the with-block."""
        family, table = ruleset.split()[1:3]
        self.load_nft(ns, ruleset)
        try:
            yield
        finally:
            self.run(ns, "nft", "delete", "table", family, table, check=False)

    def serve_banners(self, ns: str, banner: str, tcp: Sequence[int] = (), udp: Sequence[int] = (), *,
                      ipv6: bool = False, dns: bool = False) -> None:
        """The banner server (BANNER_SERVER_SRC) in `ns` on `tcp` and `udp` ports, until the lab ends; with
        `dns`, UDP 53 answers like a DNS server."""
        self.spawn(ns, sys.executable, "-c", BANNER_SERVER_SRC, banner, ",".join(map(str, tcp)),
                   ",".join(map(str, udp)), "1" if ipv6 else "0", *(["1"] if dns else []), ready="ready")

    def check_answers(self, ns: str, program: str, args: Sequence[str], expected: Mapping[str, Any], *,
                      timeout: float = 30) -> None:
        """Run `program` (Python printing one JSON object) in `ns`; raise LabError naming every key whose value
        is not `expected`'s. Each lab proves with it, before anyone captures, that its services answer from the
        hosts they should."""
        got = json.loads(self.run(ns, sys.executable, "-c", program, *args, timeout=timeout).stdout)
        wrong = {k: (v, got.get(k)) for k, v in expected.items() if got.get(k) != v}
        if wrong:
            raise LabError(f"{self.what} {self.prefix} answers wrongly (expected, got): {wrong}")

    # ------------------------------------------------------------------------ capturing

    def capture(self, path: str | os.PathLike, *, at: str | None = None, settle_s: float | None = None
                ) -> contextlib.AbstractContextManager[Capture]:
        """tcpdump -U -s 2048 at sensor `at` (`sensors`; default the first) for the with-block, both directions;
        after it, waits `settle_s` (default the lab's) for late replies."""
        role, iface = self.sensors[at or next(iter(self.sensors))]
        return tcpdump(self.ns(role), iface, path, settle_s=self.settle_s if settle_s is None else settle_s,
                       buffer_kib=self.buffer_kib)
