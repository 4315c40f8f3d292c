"""`synlens scans` against real scans made in a namespace lab (tests/support/scanlab.py, tests/support/make_scan_captures.py).

A session fixture builds the lab once and makes every capture with its truth (nmap's own ``-oX`` verdict,
the lab's configuration for hping3, masscan's and zmap's own output) into a temporary directory; each test then runs
``python -m analyzer scans CAPTURE --format json`` (once per capture, cached) and compares:

* the set of (scanner, target, type) found is exactly the truth's (ACK and WINDOW may stand for each
  other: a capture shows the same probes; PING scans of swept addresses nmap found down are allowed);
  ordinary traffic yields ``"scans": []``;
* every port nmap reported has the same state in ours (for -sA/-sW, whose probes are identical on the
  wire, the state nmap's rule gives for the type ours reports);
* probe flags, tool, first/last inside the tool's run, probe count between ports and probe packets;
* each target's MAC in ``hosts``; OS hints never taken from a tool's packets (every lab host is Linux, at
  most one hop away); the analyzer finishes each capture in under 10 s;
* "not fooled": a scanner behind NAT is named by the NAT's outside address on the target's side and by its
  own on its side, with nmap's states on both; on the NAT gateway's own bridge (probes translated, replies
  already translated back) replies pair by match's second pass (``attrs["nat_pairs"]``, 0 everywhere else)
  and closed ports read closed; a target that rate-limits ICMP errors and RSTs leaves ports
  unanswered, and ours say of them what nmap's rules say of no reply (never a state the capture does not
  show); every datagram nmap sent a UDP port, retries from new source ports with payloads included, is a
  probe of the scan.

Set ``SYNLENS_SCAN_CAPTURES=DIR`` to reuse captures made before by ``tests/support/make_scan_captures.py DIR``
(no lab needed then, only the analyzer).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import make_scan_captures as gen
import pandas as pd
import pytest
from conftest import families_both_ways, require_lab, require_tools
from scanlab import ScanLab

import analyzer

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
STEM = "slsc"
WINDOW_SLACK_S = (0.5, 1.0)  # before the tool started, after it ended

NAMES = gen.NAMES
SCAN_NAMES = [n for n in NAMES if gen.KINDS[n] != "ordinary"]
ORDINARY_NAMES = [n for n in NAMES if gen.KINDS[n] == "ordinary"]
NAT_NAMES = [n for n in NAMES if n.startswith("nat_")]
NAT_GATEWAY_NAMES = [n for n in NAMES if n.startswith("natgw_")]
RATE_LIMITED_NAMES = [n for n in NAMES if n.startswith("ratelimit_")]
UDP_NMAP_NAMES = [n for n in NAMES if "udp" in n and gen.KINDS[n] == "nmap"]
EQUIVALENT_TYPES = {"ACK": {"ACK", "WINDOW"}, "WINDOW": {"ACK", "WINDOW"}}
# Raw-packet TCP scans carry nmap's signature (window 1024, one source port per phase): tool must be nmap.
NMAP_SIGNED = {"SYN", "FIN", "NULL", "XMAS", "ACK", "WINDOW", "MAIMON", "CUSTOM"}
UNKNOWN_TOOL = {None, "", "unknown"}
SIGNED_TOOLS = {"hping3", "masscan", "zmap"}  # tools other than nmap whose every probe carries their signature
# Every lab host is Linux, at most one router (the NAT gateway) from the capture: an initial TTL of 64, 0 or 1 hops.
LAB_OS, LAB_INITIAL_TTL, LAB_MAX_HOPS = "Linux", 64, 1
FLAG_NAMES = {"FIN": "F", "SYN": "S", "RST": "R", "PSH": "P", "ACK": "A", "URG": "U", "ECE": "E", "CWR": "C"}
# Known disagreements, as strict xfails (an XPASS fails: remove the entry when the analyzer is fixed).
KNOWN_GAPS: dict[tuple[str, str], str] = {}


def cases(test: str, names: list[str]) -> list:
    """`names` as parameters of `test`, its known gaps marked strict xfail."""
    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[test, n]))
            if (test, n) in KNOWN_GAPS else n for n in names]  # fmt: skip


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def captures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """(directory, {name: truth}) of every capture, made once per session."""
    reuse = os.environ.get("SYNLENS_SCAN_CAPTURES")
    if reuse:
        d = Path(reuse)
        truths = {
            n: json.loads((d / f"{n}.truth.json").read_text())
            for n in NAMES
            if (d / f"{n}.truth.json").exists()
        }
        if not truths:
            pytest.skip(f"SYNLENS_SCAN_CAPTURES={reuse} holds no truth files")
        return d, truths
    require_lab()
    require_tools(*gen.TOOLS)
    ScanLab.remove_orphans(STEM)
    d = tmp_path_factory.mktemp("scan_captures")
    truths = gen.make_all(d, prefix=f"{STEM}{os.getpid()}")
    return d, {t["name"]: t for t in truths}


@pytest.fixture(scope="session")
def scans_cli() -> None:
    """Skip, visibly, while the analyzer has no `scans` command."""
    r = subprocess.run([sys.executable, "-m", "analyzer", "scans", "--help"], check=False, cwd=REPO,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(
            f"`python -m analyzer scans` unavailable: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
        )


_RESULTS: dict[Path, dict] = {}


def analyze(captures: tuple[Path, dict[str, dict]], name: str, file: str | None = None) -> tuple[dict, dict]:
    """(analyzer JSON, truth) for capture `name` (or its other capture `file`); the analyzer runs once per
    file."""
    d, truths = captures
    if name not in truths:
        pytest.skip(f"capture {name} was not made")
    pcap = d / (file or f"{name}.pcap")
    if pcap not in _RESULTS:
        r = subprocess.run(
            [sys.executable, "-m", "analyzer", "scans", str(pcap), "--format", "json"],
            check=False, cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, f"analyzer failed on {pcap.name} (rc {r.returncode}):\n{r.stderr[-3000:]}"
        _RESULTS[pcap] = json.loads(r.stdout)
    return _RESULTS[pcap], truths[name]


# ---------------------------------------------------------------------------------------------- helpers


def flag_set(flags: str | None) -> set[str] | None:
    """TCP flags as a set of letters, from letters ("SEC", "FPU") or names ("SYN,ECE,CWR", "SYN|ECE")."""
    if flags is None:
        return None
    text = flags.upper()
    letters = set()
    for name, letter in FLAG_NAMES.items():
        if name in text:
            letters.add(letter)
            text = text.replace(name, "")
    letters |= {{"W": "C"}.get(c, c) for c in text if c.isalpha()}  # tcpdump writes CWR as W
    return letters


def key(scan: dict) -> tuple[str, str, str]:
    return scan["scanner"], scan["target"], scan["type"]


def find_ours(ours: list[dict], want: dict) -> dict | None:
    """Our scan matching a truth scan: same scanner and target, same or equivalent type."""
    types = EQUIVALENT_TYPES.get(want["type"], {want["type"]})
    hits = [s for s in ours if s.get("scanner") == want["scanner"] and s.get("target") == want["target"]
            and s.get("type") in types]  # fmt: skip
    exact = [s for s in hits if s.get("type") == want["type"]]
    return (exact or hits or [None])[0]


def describe(ours: list[dict]) -> str:
    return json.dumps([{k: v for k, v in s.items() if k != "ports"} | {"ports": len(s.get("ports", []))}
                       for s in ours], indent=1)  # fmt: skip


# ---------------------------------------------------------------------------------------------- the lab


@pytest.mark.parametrize("name", NAMES)
def test_capture_made(captures, name: str) -> None:
    """Each capture exists, is small, lost nothing, and nmap agreed with the lab's configuration."""
    d, truths = captures
    if name not in truths:
        pytest.skip(f"capture {name} was not made")
    t = truths[name]
    pcap = d / t["file"]
    assert pcap.exists() and t["packets"] > 0
    assert pcap.stat().st_size < gen.MAX_CAPTURE_BYTES
    assert t["tcpdump_dropped"] == 0, f"tcpdump dropped {t['tcpdump_dropped']} packets"
    assert not t["nmap_vs_lab"], "nmap's verdict differs from the lab's configuration: " + "; ".join(
        t["nmap_vs_lab"]
    )
    if t["kind"] != "ordinary":
        assert t["scans"], "truth lists no scan"
        for s in t["scans"]:
            assert s["probe_packets"] >= max(1, len(s["ports"])) or s["type"] == "PING"


# ---------------------------------------------------------------------------------------------- the analyzer


@pytest.mark.parametrize("name", cases("test_scan_types", NAMES))
def test_scan_types(captures, scans_cli, name: str) -> None:
    """Exactly the scans the capture holds: scanner, target and technique."""
    out, truth = analyze(captures, name)
    ours = out["scans"]
    if not truth["scans"]:
        assert ours == [], f"ordinary traffic reported as scans:\n{describe(ours)}"
        return
    missing = [key(w) for w in truth["scans"] if find_ours(ours, w) is None]
    allowed = {key(w) for w in truth["scans"]}
    for w in truth["scans"]:
        allowed |= {(w["scanner"], w["target"], t) for t in EQUIVALENT_TYPES.get(w["type"], ())}
    allowed |= {(truth["scanner"], a, "PING") for a in truth.get("swept", [])}
    extra = [key(s) for s in ours if key(s) not in allowed]
    # Two of ours for one truth scan (a scan split in two) is wrong too.
    counts = {}
    for s in ours:
        k = (s["scanner"], s["target"], "ACK" if s["type"] in ("ACK", "WINDOW") else s["type"])
        counts[k] = counts.get(k, 0) + 1
    split = {k: n for k, n in counts.items() if n > 1}
    assert not missing and not extra and not split, (
        f"missing {missing}, unexpected {extra}, split {split}\nours:\n{describe(ours)}"
    )


def wrong_states(ours_scans: list[dict], truth_scans: list[dict]) -> list[str]:
    """Every port of the truth whose state in ours differs (or is missing), as text."""
    wrong = []
    for want in truth_scans:
        ours = find_ours(ours_scans, want)
        if ours is None:
            if want["ports"]:
                wrong.append(f"{key(want)}: no such scan")
            continue
        by_port = {(p.get("protocol"), p.get("port")): p.get("state") for p in ours.get("ports", [])}
        for p in want["ports"]:
            got = by_port.get((p["protocol"], p["port"]), "<absent>")
            expected = p["state"]
            if ours["type"] != want["type"] and "states_by_type" in p:
                # -sA/-sW probes are identical on the wire: judge ours by nmap's rule for the type
                # ours reports (RST -> unfiltered for ACK; RST window 0 -> closed for WINDOW).
                expected = p["states_by_type"][ours["type"]]
            if got != expected:
                wrong.append(f"{want['type']} {want['target']} {p['protocol']}/{p['port']}: ours {got} "
                             f"as {ours['type']}, want {expected} (nmap {want['type']}: {p['state']}, "
                             f"{p['reason']})")  # fmt: skip
    return wrong


@pytest.mark.parametrize("name", cases("test_port_states", SCAN_NAMES))
def test_port_states(captures, scans_cli, name: str) -> None:
    """Every port nmap (or, for hping3, the lab) reported has the same state in ours."""
    out, truth = analyze(captures, name)
    wrong = wrong_states(out["scans"], truth["scans"])
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", SCAN_NAMES)
def test_flags_and_tool(captures, scans_cli, name: str) -> None:
    """Probe flags (order ignored) and the tool that the packets' signature names."""
    out, truth = analyze(captures, name)
    wrong = []
    for want in truth["scans"]:
        ours = find_ours(out["scans"], want)
        if ours is None:
            continue  # test_scan_types reports it
        if want["flags"] is not None and flag_set(ours.get("flags")) != flag_set(want["flags"]):
            wrong.append(f"{key(want)}: flags {ours.get('flags')!r}, want {want['flags']!r}")
        tool = ours.get("tool")
        if want["tool"] in SIGNED_TOOLS:
            ok = tool == want["tool"]
        elif want["type"] in NMAP_SIGNED:
            ok = tool == "nmap"
        else:  # kernel-made (connect) or signature-poor probes: nmap or unknown, never another tool
            ok = tool == "nmap" or tool in UNKNOWN_TOOL
        if not ok:
            wrong.append(f"{key(want)}: tool {tool!r}, want {want['tool']!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", SCAN_NAMES)
def test_times_and_probes(captures, scans_cli, name: str) -> None:
    """first/last lie within the tool's run; probes between the ports reported and the probe packets sent."""
    out, truth = analyze(captures, name)
    wrong = []
    before, after = WINDOW_SLACK_S
    for want in truth["scans"]:
        ours = find_ours(out["scans"], want)
        if ours is None:
            continue
        first, last = float(ours["first"]), float(ours["last"])
        if not (want["started"] - before <= first <= last <= want["ended"] + after):
            wrong.append(f"{key(want)}: first/last {first:.3f}/{last:.3f} outside the run "
                         f"{want['started']:.3f}..{want['ended']:.3f}")  # fmt: skip
        lo, hi = len(want["ports"]), want["probe_packets"]
        if not (max(lo, 1) <= int(ours["probes"]) <= hi):
            wrong.append(f"{key(want)}: probes {ours['probes']}, want {max(lo, 1)}..{hi}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", NAMES)
def test_hosts(captures, scans_cli, name: str) -> None:
    """Every host the truth knows is listed with its MAC (scanner included)."""
    out, truth = analyze(captures, name)
    ours = {h.get("address"): h for h in out.get("hosts", [])}
    wrong = []
    for h in truth["hosts"]:
        if h["status"] != "up" or not h["mac"]:
            continue
        got = ours.get(h["address"])
        if got is None:
            wrong.append(f"{h['address']}: not in hosts")
        elif (got.get("mac") or "").lower() != h["mac"].lower():
            wrong.append(f"{h['address']}: mac {got.get('mac')!r}, want {h['mac']}")
    assert not wrong, "\n".join(wrong) + f"\nours: {json.dumps(list(ours.values()))}"


@pytest.mark.parametrize("name", NAMES)
def test_os_hints(captures, scans_cli, name: str) -> None:
    """Not fooled by a tool's packets: every lab host is Linux, 0 or 1 hop away, and each OS hint says so or
    says nothing; nmap's random TTLs (37-59) and masscan's and zmap's TTL 255 are the tools', not the hosts'."""
    out, _ = analyze(captures, name)
    wrong = []
    for h in out.get("hosts", []):
        evidence = h.get("os_evidence") or ""
        ttl = re.search(r"TTL \d+ \(initial (\d+), (\d+) hops\)", evidence)
        if ttl and (int(ttl.group(1)) != LAB_INITIAL_TTL or int(ttl.group(2)) > LAB_MAX_HOPS):
            wrong.append(f"{h['address']}: {evidence}")
        if h.get("os") and not h["os"].startswith(LAB_OS):
            wrong.append(f"{h['address']}: OS hint {h['os']}")
    assert not wrong, "\n".join(wrong)


def test_sweep_reads_as_its_answers(captures, scans_cli, tmp_path) -> None:
    """zmap's sweep of 4,097 addresses, one of which answers: the text lists the answering target's table and
    the others in one block (nmap and zmap list only answers too); the HTML report likewise, not 4,097 tables.
    (How fast: benchmarks/sweep.py.)"""
    out, truth = analyze(captures, "zmap_sweep")
    assert len(out["scans"]) == len(truth["scans"]) > 4000  # the JSON keeps one row per target
    d, _ = captures
    pcap = d / "zmap_sweep.pcap"
    text = subprocess.run([sys.executable, "-m", "analyzer", "scans", str(pcap)], check=True, cwd=REPO,
                          capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    quiet = len(truth["scans"]) - 1
    assert f"-> {gen.ZMAP_SWEEP.split('/')[0]}" not in text  # no block of its own for a silent target
    assert f"-> {quiet:,} targets that answered nothing  [zmap;" in text
    assert f"ports: {gen.ZMAP_PORT}/tcp filtered ×{quiet:,}" in text
    target = next(s["target"] for s in truth["scans"] if s["ports"][0]["state"] == "open")
    block = text.split(f"-> {target}  [zmap;")[1].split("\n\n")[0]
    assert f"{gen.ZMAP_PORT}/tcp  open" in block
    assert len(text.splitlines()) < 20
    html = tmp_path / "sweep.html"
    subprocess.run([sys.executable, "-m", "analyzer", "report", str(pcap), "-o", str(html)], check=True, cwd=REPO,
                   capture_output=True, timeout=300)  # fmt: skip
    page = html.read_text(encoding="utf-8")
    assert f"{quiet:,} targets of phase" in page and "answered no probe, so have no RTT to group" in page
    assert html.stat().st_size < 1_000_000
    # rtt too: the text one block for the silent targets, the JSON every target
    rtt = subprocess.run([sys.executable, "-m", "analyzer", "rtt", str(pcap)], check=True, cwd=REPO,
                         capture_output=True, text=True, timeout=300).stdout  # fmt: skip
    assert f"\n{quiet:,} targets that answered no probe" in rtt and f"\n{target} (tcp)\n" in rtt
    assert len(rtt.splitlines()) < 20
    whole = json.loads(subprocess.run([sys.executable, "-m", "analyzer", "rtt", str(pcap), "--format", "json"],
                                      check=True, cwd=REPO, capture_output=True, text=True, timeout=300).stdout)
    assert len(whole["targets"]) == quiet + 1


def test_answering_sweep_reads_as_one_table(captures, scans_cli, tmp_path) -> None:
    """zmap's sweep of 1,025 addresses that all answer (the target holds them all): the HTML report lists them
    as rows of one port table and one RTT table, as zmap lists its answers, not a heading and tables for each."""
    _, truth = analyze(captures, "zmap_answering")
    n = len(truth["scans"])
    assert n > 1000 and all(s["ports"][0]["state"] == "open" for s in truth["scans"])
    d, _ = captures
    html = tmp_path / "answering.html"
    subprocess.run([sys.executable, "-m", "analyzer", "report", str(d / "zmap_answering.pcap"), "-o", str(html)],
                   check=True, cwd=REPO, capture_output=True, timeout=300)  # fmt: skip
    page = html.read_text(encoding="utf-8")
    assert f"<h3>{n:,} targets of phase " in page and f"<h3>{n:,} targets of at most " in page
    assert page.count("<h3>") < 10
    ports = page.split('<section id="ports"')[1].split("</section>")[0]
    first = min(truth["scans"], key=lambda s: tuple(map(int, s["target"].split("."))))["target"]
    assert f"<tbody>\n<tr><td>{first}</td><td>{gen.ZMAP_PORT}/tcp</td>" in ports  # rows in address order
    assert html.stat().st_size < 1_000_000


@pytest.mark.parametrize("name", ["ping", "zmap", "zmap_sweep"])
def test_batched_targets_read_as_one_by_one(captures, name: str, monkeypatch) -> None:
    """signal_families' batches (targets that answered nothing; one-port targets with few replies: sweeps and
    pings) give exactly what the per-target loop gives, in the same places."""
    d, truths = captures
    if name not in truths:
        pytest.skip(f"capture {name} was not made")
    packets = analyzer.read(d / f"{name}.pcap")
    batched, one_by_one, ran = families_both_ways(packets, analyzer.match(packets), monkeypatch)
    assert "_single_port_targets" in ran  # the batch really ran (every one of these has answering hosts)
    for got, want in zip(batched, one_by_one):
        pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize("name", NAMES)
def test_compiled_reader_reads_like_numpy(captures, name: str, monkeypatch) -> None:
    """The compiled record walk and Ethernet/IPv4/TCP decode (analyzer/accel/_reader.c) read each real capture (every
    tool the lab runs) into exactly the table the numpy code reads."""
    import analyzer.accel

    d, truths = captures
    if name not in truths:
        pytest.skip(f"capture {name} was not made")
    assert analyzer.accel.COMPILED.reader is not None, "analyzer.accel._reader is not built (pip install -e . with gcc)"
    compiled = analyzer.read(d / f"{name}.pcap")
    monkeypatch.setattr(analyzer.accel, "COMPILED", analyzer.accel.NONE)
    numpy = analyzer.read(d / f"{name}.pcap")
    pd.testing.assert_frame_equal(compiled, numpy)
    assert compiled.attrs == numpy.attrs


@pytest.mark.parametrize("name", NAMES)
def test_scans_in_chunks_are_the_wholes(captures, name: str) -> None:
    """scans and hosts of each real capture (every tool and technique the lab runs, nmap's IP protocol scan
    among them) read and matched 50 records at a time, its packets screened as the matcher lets them go
    (analysis/screen.py), with a 50 ms reply window that cuts it many times: the same scans, port states, notes
    and hosts as read whole."""
    from analyzer.pipeline import Options

    d, truths = captures
    if name not in truths:
        pytest.skip(f"capture {name} was not made")
    pcap = str(d / f"{name}.pcap")
    whole = analyzer.analyze(pcap, ("scans", "hosts"), Options(window_s=0.05, chunk=0))
    in_chunks = analyzer.analyze(pcap, ("scans", "hosts"), Options(window_s=0.05, chunk=50))
    for a, b in ((whole.scans.scans, in_chunks.scans.scans), (whole.scans.states, in_chunks.scans.states),
                 (whole.scans.notes, in_chunks.scans.notes), (whole.hosts, in_chunks.hosts)):
        pd.testing.assert_frame_equal(a, b)
    assert len(whole.scans.scans) or len(whole.scans.notes) or len(whole.hosts)  # (a result worth comparing)


# ---------------------------------------------------------------------------------------------- not fooled


@pytest.mark.parametrize("name", NAT_NAMES)
def test_nat_outside_address_is_the_scanner(captures, scans_cli, name: str) -> None:
    """Captured on the target's side of a NAT: every scan's scanner is the NAT's outside address; the
    scanner's own (inside) address, which never crossed the NAT, appears nowhere in ours."""
    out, truth = analyze(captures, name)
    nat = truth["nat"]
    assert truth["scanner"] == nat["outside"] and truth["scans"]
    assert out["scans"], "no scan found"
    assert {s["scanner"] for s in out["scans"]} == {nat["outside"]}
    assert nat["inside"] not in json.dumps(out)


@pytest.mark.parametrize("name", NAT_NAMES)
def test_nat_inside_capture(captures, scans_cli, name: str) -> None:
    """The same scan captured on the scanner's side of the NAT: ours name the inside address, find the same
    technique, and every port has nmap's state there too."""
    _, truth = analyze(captures, name)
    nat = truth["nat"]
    assert nat["inside_tcpdump_dropped"] == 0
    out, _ = analyze(captures, name, nat["inside_capture"])
    inside = [w | {"scanner": nat["inside"]} for w in truth["scans"]]
    assert sorted(map(key, out["scans"])) == sorted(map(key, inside)), describe(out["scans"])
    wrong = wrong_states(out["scans"], inside)
    assert not wrong, "\n".join(wrong)


def _match(captures: tuple[Path, dict[str, dict]], name: str):
    d, truths = captures
    if name not in truths:
        pytest.skip(f"capture {name} was not made")
    from analyzer import match, read

    packets = read(d / truths[name]["file"])
    return packets, match(packets), truths[name]


@pytest.mark.parametrize("name", NAT_GATEWAY_NAMES)
def test_nat_gateway_pairs(captures, name: str) -> None:
    """Captured on the NAT gateway's own bridge: the capture really shows probes from the outside address and
    replies to the inside one, and match pairs them by its second pass (without the prober's address)."""
    packets, probes, truth = _match(captures, name)
    nat = truth["nat"]
    assert nat["capture"] == "gateway"
    src, dst = packets["src"].astype(str), packets["dst"].astype(str)
    assert ((src == nat["outside"]) & (dst == truth["scans"][0]["target"])).any(), "no probe from the outside address"
    assert (dst == nat["inside"]).any(), "no reply to the inside address: not the gateway's mixed view"
    assert (src != nat["inside"]).all(), "the inside address sent on the outside bridge"
    assert probes.attrs["nat_pairs"] > 0


@pytest.mark.parametrize("name", [n for n in NAMES if n not in NAT_GATEWAY_NAMES])
def test_no_nat_pairs_elsewhere(captures, name: str) -> None:
    """Every other capture shows one address per prober: the second pass pairs nothing there."""
    _, probes, _ = _match(captures, name)
    assert probes.attrs["nat_pairs"] == 0


@pytest.mark.parametrize("name", NAT_GATEWAY_NAMES)
def test_nat_gateway_closed_ports(captures, scans_cli, name: str) -> None:
    """On the gateway's bridge a closed port's RST or ICMP port unreachable goes to the inside address: paired,
    it reads closed (unpaired, it would read filtered or open|filtered), under the outside scanner."""
    out, truth = analyze(captures, name)
    assert {s["scanner"] for s in out["scans"]} == {truth["nat"]["outside"]}, describe(out["scans"])
    wrong, closed = [], 0
    for want in truth["scans"]:
        ours = find_ours(out["scans"], want)
        assert ours is not None, describe(out["scans"])
        states = {(p["protocol"], p["port"]): p["state"] for p in ours["ports"]}
        for p in want["ports"]:
            if p["state"] == "closed":
                closed += 1
                if states.get((p["protocol"], p["port"])) != "closed":
                    wrong.append(f"{p['protocol']}/{p['port']}: ours {states.get((p['protocol'], p['port']))}")
    assert closed >= 2, "nmap found fewer than two closed ports: nothing tested"
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", RATE_LIMITED_NAMES)
def test_rate_limited_target(captures, scans_cli, name: str) -> None:
    """The target's rate limit really swallowed replies (nmap heard nothing from ports the lab answers) and
    let some through; on every swallowed port ours say what nmap's rules say of no reply, from no reply."""
    out, truth = analyze(captures, name)
    (want,) = truth["scans"]
    lost = [p for p in want["ports"] if p.get("reply_lost")]
    answered = [p for p in want["ports"] if p["reason"] != "no-response" and p["lab_state"] == "closed"]
    assert len(lost) >= 10, f"only {len(lost)} replies lost: the rate limit did not bite"
    assert answered, "no closed port answered: the rate limit let nothing through"
    ours = find_ours(out["scans"], want)
    assert ours is not None, describe(out["scans"])
    by_port = {p["port"]: p for p in ours["ports"]}
    wrong = [f"{p['protocol']}/{p['port']}: ours {by_port.get(p['port'])}, nmap {p['state']} (no-response)"
             for p in lost
             if (by_port.get(p["port"]) or {}).get("state") != p["state"]
             or by_port[p["port"]]["reason"] != "no-response"]  # fmt: skip
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", UDP_NMAP_NAMES)
def test_udp_retries_are_probes(captures, scans_cli, name: str) -> None:
    """Every datagram nmap sent a UDP port is a probe of the scan: its first try and each retry from a new
    source port, with a protocol payload (DNS, SNMP, NetBIOS, echo …) or without; a port only a retry
    could reach has the state nmap gave it."""
    out, truth = analyze(captures, name)
    wrong, retried = [], 0
    for want in truth["scans"]:
        ours = find_ours(out["scans"], want)
        assert ours is not None, describe(out["scans"])
        probes = {p["port"]: p["probes"] for p in ours["ports"]}
        for p in want["ports"]:
            retried += p["source_ports"] > 1
            if probes.get(p["port"]) != p["source_ports"]:
                wrong.append(f"udp/{p['port']}: {probes.get(p['port'])} probes in ours, datagrams from "
                             f"{p['source_ports']} source ports in the capture")  # fmt: skip
        states = {p["port"]: p["state"] for p in ours["ports"]}
        for lost in truth.get("lost_first", []):
            (p,) = [p for p in want["ports"] if p["port"] == lost["port"]]
            assert p["source_ports"] >= 2 and p["reason"] != "no-response", "nmap's retry was not answered"
            if states.get(p["port"]) != p["state"]:
                wrong.append(f"udp/{p['port']}: ours {states.get(p['port'])}, nmap {p['state']} from its retry")
    assert retried, "nmap retried no port: nothing tested"
    assert not wrong, "\n".join(wrong)
