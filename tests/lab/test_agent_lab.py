"""The capture agent against the NAT lab (tests/support/natlab.py): what it sends, what it captures, how it stops.

Every check reads the agent's pcap with tshark (or dpkt for validity), not the agent's own code. Needs root
and the lab's tools; skips with the reason shown otherwise.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import dpkt
import pytest
import scipy.stats
from conftest import lab_prefix, require_lab, require_tools
from natlab import NatLab, nat_lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
DELAY_MS = 20
TRIPS = 5
# A gap is measured between the kernel stamps of two of our probes. The agent spins for the last 1 ms
# before a send, so a gap exceeds its plan by the send path (on the lab's veths ~0.1-0.3 ms, as sendto()
# returns after the peer namespace has handled the SYN) plus any time the scheduler kept the agent off the
# CPU; it records the worst as late_max_ms. CLOCK_SLACK_MS: capture clock against the monotonic clock.
CLOCK_SLACK_MS = 0.05
FIELDS = (
    "frame.time_epoch", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "tcp.flags",
    "tcp.seq_raw", "tcp.options.mss_val", "tcp.options.timestamp.tsval", "tcp.options.timestamp.tsecr",
    "icmp.type", "icmp.code", "icmpv6.type", "icmpv6.code",
)  # fmt: skip


def agent_cmd(lab: NatLab, args: str, env: tuple[str, ...] = ()) -> list[str]:
    """`ip netns exec <scanner> env … python -m agent probe <args>`; `args` is split on whitespace."""
    python = [sys.executable, "-m", "agent", "probe", *args.split()]
    return ["ip", "netns", "exec", lab.scanner_ns, "env", f"PYTHONPATH={REPO}", *env, *python]


def run_agent(lab: NatLab, args: str, env: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(agent_cmd(lab, args, env), capture_output=True, text=True, timeout=300, check=False)


def tshark_rows(pcap: Path) -> list[dict[str, str]]:
    require_tools("tshark")
    cmd = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]
    for name in FIELDS:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    return [dict(zip(FIELDS, line.split("\t"))) for line in out.splitlines()]


def src(row: dict[str, str]) -> str:
    return row["ip.src"] or row["ipv6.src"]


def dst(row: dict[str, str]) -> str:
    return row["ip.dst"] or row["ipv6.dst"]


def is_icmp(row: dict[str, str]) -> bool:
    return bool(row["icmp.type"] or row["icmpv6.type"])


def probes_of(rows: list[dict[str, str]], target: str) -> list[dict[str, str]]:
    return [r for r in rows if dst(r) == target and not is_icmp(r) and int(r["tcp.flags"], 16) & 0x02]


def replies_by_port(rows: list[dict[str, str]], target: str) -> dict[int, set[str]]:
    """What each probed port answered: 'SA', 'R' (RST), 'icmp 3/13', 'icmpv6 1/1'."""
    out: dict[int, set[str]] = {}
    for r in rows:
        if src(r) != target:
            continue
        if is_icmp(r):  # the quoted probe's destination port is the port probed
            kind = (
                f"icmp {r['icmp.type']}/{r['icmp.code']}"
                if r["icmp.type"]
                else (f"icmpv6 {r['icmpv6.type']}/{r['icmpv6.code']}")
            )
            out.setdefault(int(r["tcp.dstport"]), set()).add(kind)
        else:
            flags = int(r["tcp.flags"], 16)
            out.setdefault(int(r["tcp.srcport"]), set()).add("SA" if flags & 0x12 == 0x12 else "R")
    return out


def lab_ports(lab: NatLab) -> tuple[int, ...]:
    return tuple(sorted(lab.open_ports + lab.closed_ports + (lab.dropped_port, lab.rejected_port)))


def check_exchange(
    lab: NatLab, target: str, pcap: Path, trips: int, icmp_reject: str
) -> list[dict[str, str]]:
    """The assertions shared by IPv4 and IPv6: probes bare and random, replies as the lab dictates."""
    rows = tshark_rows(pcap)
    ports = lab_ports(lab)
    probes = probes_of(rows, target)
    assert len(probes) == trips * len(ports)
    assert all(int(p["tcp.flags"], 16) == 0x002 for p in probes), "probes must be bare SYNs"
    assert all(p["tcp.options.mss_val"] == "1460" for p in probes)
    assert [int(p["tcp.dstport"]) for p in probes] == list(
        ports
    ) * trips  # each trip visits each port in turn
    sports = [int(p["tcp.srcport"]) for p in probes]
    assert all(1025 <= s <= 65535 for s in sports)
    assert len(set(sports)) >= len(sports) - 2  # random: a birthday collision or two is allowed
    assert len({p["tcp.seq_raw"] for p in probes}) == len(probes)
    answers = replies_by_port(rows, target)
    for port in lab.open_ports:
        assert answers.get(port) == {"SA"}, port
    for port in lab.closed_ports:
        assert answers.get(port) == {"R"}, port
    assert lab.dropped_port not in answers
    assert answers.get(lab.rejected_port) == {icmp_reject}
    # Every SYN/ACK drew our kernel's RST (no socket owns the probe), captured as outgoing.
    resets = [r for r in rows if dst(r) == target and not is_icmp(r) and int(r["tcp.flags"], 16) & 0x04]
    assert len(resets) == trips * len(lab.open_ports)
    return rows


def check_ns_pcap(pcap: Path, rows: list[dict[str, str]]) -> None:
    magic, linktype = (
        struct.unpack("<I", pcap.read_bytes()[:4])[0],
        struct.unpack("<I", pcap.read_bytes()[20:24])[0],
    )
    assert (magic, linktype) == (0xA1B23C4D, 1)
    stamps = [r["frame.time_epoch"] for r in rows]
    assert all(len(s.split(".")[1]) == 9 for s in stamps)
    # Kernel stamps carry real nanoseconds, not microseconds padded with zeros.
    assert sum(not s.endswith("000") for s in stamps) > len(stamps) // 2


# --------------------------------------------------------------------------- one IPv4 run, many checks


@pytest.fixture(scope="module")
def ipv4_run(
    lab: NatLab, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess]:
    require_tools("tshark")
    pcap = tmp_path_factory.mktemp("agent") / "v4.pcap"
    ports = ",".join(map(str, lab_ports(lab)))
    out = run_agent(
        lab,
        f"{lab.target} --ports {ports} --numtrips {TRIPS} --delay {DELAY_MS}ms --timeout 1s --write {pcap}",
    )
    return pcap, out


def test_ipv4_probes_and_replies(lab: NatLab, ipv4_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    pcap, out = ipv4_run
    assert out.returncode == 0, out.stderr
    rows = check_exchange(lab, lab.target, pcap, TRIPS, "icmp 3/13")
    check_ns_pcap(pcap, rows)


def test_gaps_jittered_within_50_to_150_percent(
    lab: NatLab, ipv4_run: tuple[Path, subprocess.CompletedProcess]
) -> None:
    pcap, _ = ipv4_run
    stamps = [Decimal(p["frame.time_epoch"]) for p in probes_of(tshark_rows(pcap), lab.target)]
    gaps_ms = [float(b - a) * 1000 for a, b in itertools.pairwise(stamps)]
    side = json.loads(Path(f"{pcap}.json").read_text())
    planned_ms = [row[-1] * 1000 for row in side["plan"][:-1]]
    # The plan: a fresh uniform draw in 50-150 % of the delay after each probe.
    assert all(0.5 * DELAY_MS <= p <= 1.5 * DELAY_MS for p in planned_ms)
    assert max(planned_ms) - min(planned_ms) > 0.5 * DELAY_MS
    # On the capture clock a gap is never shorter than planned (the next probe is timed from after the
    # previous sendto(), inside which the kernel stamps it) ...
    excess_ms = sorted(g - p for g, p in zip(gaps_ms, planned_ms))
    assert excess_ms[0] >= -CLOCK_SLACK_MS, excess_ms
    # ... the capture shows the plan's jitter (the gaps rank as planned, whatever the machine's load) ...
    rho = scipy.stats.spearmanr(planned_ms, gaps_ms[: len(planned_ms)]).statistic
    assert rho > 0.8, (rho, planned_ms, gaps_ms)
    # ... and by more only when the machine kept the agent off the CPU, which it records: each gap can be
    # stretched at both ends, by at most the worst time from a planned send to the return of its sendto().
    stretch_ms = 2 * side["late_max_ms"] + CLOCK_SLACK_MS
    assert excess_ms[-1] <= stretch_ms, (excess_ms, side["late_max_ms"])
    assert max(gaps_ms) <= 1.5 * DELAY_MS + stretch_ms


def test_sidecar_records_plan_and_arguments(
    lab: NatLab, ipv4_run: tuple[Path, subprocess.CompletedProcess]
) -> None:
    pcap, _ = ipv4_run
    side = json.loads(Path(f"{pcap}.json").read_text())
    assert side["config"]["numtrips"] == TRIPS and side["config"]["delay_s"] == DELAY_MS / 1000
    assert side["interface"] == lab.scanner_iface and side["sources"] == {lab.target: lab.scanner_addr}
    assert side["sent"] == len(side["plan"]) == TRIPS * len(lab_ports(lab))
    assert side["kernel_drops"] == 0 and side["interrupted_by"] is None


# --------------------------------------------------------------------------- IPv6, discovery, timestamps


@pytest.fixture(scope="module")
def lab6() -> Iterator[NatLab]:
    require_lab()
    with nat_lab(lab_prefix("ag6"), ipv6=True) as built:
        yield built


def test_ipv6_probes_and_replies(lab6: NatLab, tmp_path: Path) -> None:
    require_tools("tshark")
    assert lab6.target6
    pcap = tmp_path / "v6.pcap"
    ports = ",".join(map(str, lab_ports(lab6)))
    out = run_agent(
        lab6,
        f"{lab6.target6} --ports {ports} --numtrips 3 --delay 10ms --max-rate 200 --timeout 1s "
        f"--write {pcap}",
    )
    assert out.returncode == 0, out.stderr
    rows = check_exchange(lab6, lab6.target6, pcap, 3, "icmpv6 1/1")
    check_ns_pcap(pcap, rows)


def test_discovery_picks_open_and_closed_ports(lab: NatLab, tmp_path: Path) -> None:
    pcap = tmp_path / "disc.pcap"
    out = run_agent(
        lab,
        f"{lab.target} --numtrips 3 --delay 10ms --max-rate 200 --timeout 0.5s --numclosed 2 --write {pcap}",
    )
    assert out.returncode == 0, out.stderr
    chosen = json.loads(Path(f"{pcap}.json").read_text())["ports"][lab.target]
    opened = [p for p in chosen if p in lab.open_ports]
    closed = [p for p in chosen if p not in lab.open_ports]
    assert opened == list(lab.open_ports)  # all 5 are in nmap's top 100, and 5 <= --numopen 8
    assert len(closed) == 2 and lab.dropped_port not in closed and lab.rejected_port not in closed
    # The discovery pass itself stays out of the pcap: only the chosen ports' trips are in it.
    assert {int(p["tcp.dstport"]) for p in probes_of(tshark_rows(pcap), lab.target)} == set(chosen)


def test_tcp_timestamps_are_echoed(lab: NatLab, tmp_path: Path) -> None:
    pcap = tmp_path / "ts.pcap"
    out = run_agent(
        lab,
        f"{lab.target} --ports 22,443 --numtrips 3 --delay 10ms --max-rate 200 --timeout 0.5s "
        f"--tcp-timestamps --write {pcap}",
    )
    assert out.returncode == 0, out.stderr
    rows = tshark_rows(pcap)
    sent = {r["tcp.srcport"]: r["tcp.options.timestamp.tsval"] for r in probes_of(rows, lab.target)}
    assert len(sent) == 6 and all(sent.values())
    synacks = [r for r in rows if src(r) == lab.target and int(r["tcp.flags"], 16) == 0x12]
    assert len(synacks) == 6
    assert all(
        r["tcp.options.timestamp.tsecr"] == sent[r["tcp.dstport"]] and r["tcp.options.timestamp.tsval"]
        for r in synacks
    )


# --------------------------------------------------------------------------- stopping, errors, privileges


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_run_leaves_valid_pcap(lab: NatLab, tmp_path: Path, sig: int, status: int) -> None:
    pcap = tmp_path / "stop.pcap"
    args = f"{lab.target} --ports 22,443,23 --numtrips 100 --delay 50ms --write {pcap}"
    proc = subprocess.Popen(agent_cmd(lab, args), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # never a file under the final name while it runs
            assert not pcap.exists() and not Path(f"{pcap}.json").exists()
            time.sleep(0.01)
        # It writes beside the final name, under a temporary one.
        assert any(p.name.endswith(".part") for p in tmp_path.iterdir())
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status
    assert stderr.count("\n") == 1 and f"stopped by {signal.Signals(sig).name}" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stop.pcap", "stop.pcap.json"]
    with pcap.open("rb") as f:
        records = list(dpkt.pcap.Reader(f))  # dpkt raises on a truncated record
    assert 20 <= len(records) < 300 * 2
    assert pcap.stat().st_size == 24 + sum(16 + len(buf) for _, buf in records)
    side = json.loads(Path(f"{pcap}.json").read_text())
    assert side["interrupted_by"] == signal.Signals(sig).name and 10 <= side["sent"] < 300


def test_unreachable_target(lab: NatLab, tmp_path: Path) -> None:
    out = run_agent(lab, f"10.99.0.1 --ports 22 --write {tmp_path / 'x.pcap'}")
    assert out.returncode == 2 and "no route to 10.99.0.1" in out.stderr and out.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory anyone may write (pytest's tmp_path sits under a root-only directory)."""
    path = Path(tempfile.mkdtemp(prefix="synlens-agent-test-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


@pytest.mark.parametrize(
    ("how", "env"), [("sudo", ("SUDO_UID=65534", "SUDO_GID=65534")), ("--user nobody", ())]
)
def test_output_belongs_to_the_dropped_user(
    lab: NatLab, shared_dir: Path, how: str, env: tuple[str, ...]
) -> None:
    pcap = shared_dir / "user.pcap"
    user = how if how.startswith("--user") else ""
    args = f"{lab.target} --ports 22 --numtrips 3 --delay 20ms --timeout 0.2s {user} --write {pcap}"
    out = run_agent(lab, args, env=env)
    assert out.returncode == 0, out.stderr
    nobody = pwd.getpwnam("nobody")
    assert (pcap.stat().st_uid, pcap.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert Path(f"{pcap}.json").stat().st_uid == nobody.pw_uid


def test_drops_to_the_sudo_user(lab: NatLab, shared_dir: Path) -> None:
    tmp_path = shared_dir
    sudo = ("SUDO_UID=65534", "SUDO_GID=65534")
    # While it probes, the process is that user, with no supplementary groups and no capabilities.
    args = (
        f"{lab.target} --ports 22 --numtrips 20 --delay 50ms --timeout 0.2s --write {tmp_path / 'slow.pcap'}"
    )
    proc = subprocess.Popen(agent_cmd(lab, args, env=sudo), stderr=subprocess.PIPE, text=True)
    time.sleep(0.6)  # ip netns exec and env exec() in place: proc.pid is the agent
    status = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
    assert proc.wait(timeout=30) == 0
    assert status["Uid"].split() == ["65534"] * 4 and status["Gid"].split() == ["65534"] * 4
    assert status["Groups"].strip() == "" and int(status["CapPrm"], 16) == int(status["CapEff"], 16) == 0
    # A directory the user may not write: refused before any probe, nothing left behind.
    closed_dir = tmp_path / "root-only"
    closed_dir.mkdir(mode=0o755)
    out = run_agent(lab, f"{lab.target} --ports 22 --write {closed_dir / 'x.pcap'}", env=sudo)
    assert out.returncode == 2 and "Permission denied" in out.stderr
    assert list(closed_dir.iterdir()) == []


# --------------------------------------------------------------------------- with the analyzer

RUNS = 20


def test_analyzer_sees_two_families_every_run(lab: NatLab, tmp_path: Path) -> None:
    """The issue's acceptance test: 20 runs x 10 trips; local vs forwarded in two families each time."""
    two_families_every_run(lab, tmp_path)


def test_analyzer_sees_two_families_every_run_on_a_busy_machine(lab: NatLab, tmp_path: Path) -> None:
    """The same 20 runs with a CPU-bound process on every core throughout: load stretches some replies (the
    scheduler keeps the delay line, the namespaces' softirqs and the agent waiting), a time effect the families
    must not read as another machine."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)
        assert all(h.poll() is None for h in hogs)  # (busy while the runs go on)
        two_families_every_run(lab, tmp_path)
        assert all(h.poll() is None for h in hogs)
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def two_families_every_run(lab: NatLab, tmp_path: Path) -> None:
    if subprocess.run(
        [sys.executable, "-m", "analyzer", "--help"], cwd=REPO, capture_output=True, check=False
    ).returncode:
        pytest.skip("the analyzer (python -m analyzer) is not available yet")
    gateway = set(lab.local_ports + lab.closed_ports[:1])
    forwarded = set(lab.forwarded_ports)
    ports = ",".join(map(str, sorted(gateway | forwarded | {lab.dropped_port})))
    failures = []
    for run in range(RUNS):
        pcap = tmp_path / f"run{run}.pcap"
        args = (
            f"{lab.target} --ports {ports} --numtrips 10 --delay {DELAY_MS}ms --timeout 0.5s --write {pcap}"
        )
        out = run_agent(lab, args)
        assert out.returncode == 0, out.stderr
        result = subprocess.run(
            [sys.executable, "-m", "analyzer", "rtt", str(pcap), "--format", "json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        (target,) = json.loads(result.stdout)["targets"]
        by_port = {p["port"]: p for p in target["ports"]}
        dropped = by_port[lab.dropped_port]
        assert (dropped["sent"], dropped["received"], dropped["loss"]) == (10, 0, 1.0)
        assert all(by_port[p]["sent"] == by_port[p]["received"] == 10 for p in gateway | forwarded)
        fam_gateway = {by_port[p]["family"] for p in gateway}
        fam_forwarded = {by_port[p]["family"] for p in forwarded}
        if len(fam_gateway) != 1 or len(fam_forwarded) != 1 or fam_gateway == fam_forwarded:
            failures.append((run, {p: by_port[p]["family"] for p in sorted(gateway | forwarded)}))
    assert failures == [], f"{len(failures)} of {RUNS} runs split the families wrongly: {failures}"
