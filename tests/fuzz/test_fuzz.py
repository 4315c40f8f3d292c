"""The fuzz harness, tested, and the fixed-seed fuzz pass CI runs (issue 19).

The pass: FUZZ_CASES cases of seed 19 from the samples, the edge captures and the real third-party captures
(when ../shared/realworld is there), each read by the compiled reader (built with AddressSanitizer and UBSan)
and the numpy one, compared, and run through every stage of the API and every command; it must find nothing.
The harness's own tests plant each kind of fault and check it is found, saved and deduplicated.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import analyzer
from analyzer.accel import decode

from . import asan, campaign, formats, harness, mutators, seeds

FUZZ_CASES = 1000  # about two minutes on the project's machine, with the sanitized build
CORPUS = seeds.corpus()


def test_seed_corpus() -> None:
    names = {name.split("/")[0] for name, _ in CORPUS}
    assert {"sample_pcaps", "edge"} <= names
    assert all(len(formats.parse(data).packets()) <= seeds.TRIM_RECORDS for _, data in CORPUS
               if formats.parse(data) is not None)


def test_formats_round_trip() -> None:
    """formats.parse(data).bytes() is data, for every seed and for mutated cases (whatever they hold)."""
    for _, data in CORPUS:
        cap = formats.parse(data)
        assert cap is None or cap.bytes() == data
    for i in range(300):
        data = campaign.make_case(1, i, CORPUS).data
        cap = formats.parse(data)
        assert cap is None or cap.bytes() == data, i


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "gzip_bomb" else n
                                  for n in sorted(mutators.MUTATORS)])  # (the bomb inflates each seed)
def test_each_mutator_changes_some_seed(name: str) -> None:
    mutator = mutators.MUTATORS[name][0]
    changed = 0
    for k, (_, data) in enumerate(CORPUS):
        out = mutator(random.Random(k), data, CORPUS)
        again = mutator(random.Random(k), data, CORPUS)
        assert out == again  # (a case is made again from its number: mutators are deterministic)
        changed += out is not None and out != data
    assert changed >= 3, f"{name} changed {changed} seeds"


def test_cases_are_made_again_the_same() -> None:
    for i in (0, 1, 77, 12345):
        a, b = campaign.make_case(19, i, CORPUS), campaign.make_case(19, i, CORPUS)
        assert a == b and a.mutators


# ---------------------------------------------------------------------------------------------- planted faults

def _case(tmp_path: Path) -> bytes:
    return (seeds.REPO / "sample_pcaps" / "nat_qscan.pcap").read_bytes()


def test_harness_finds_an_exception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(analyzer, "scans", broken)
    found = harness.check(_case(tmp_path), tmp_path).findings
    assert [(f.kind, f.stage) for f in found] == [("traceback", "scans")]
    assert found[0].signature.startswith("ZeroDivisionError at tests/fuzz/test_fuzz.py:")


def test_harness_finds_a_warning_other_than_capture_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = analyzer.pairwise

    def noisy(*args: object, **kwargs: object) -> object:
        warnings.warn("planted", RuntimeWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(analyzer, "pairwise", noisy)
    found = harness.check(_case(tmp_path), tmp_path).findings
    assert [(f.kind, f.stage, f.detail) for f in found] == [("warning", "pairwise", "planted")]


def test_harness_finds_the_readers_disagreeing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert analyzer.accel.COMPILED.reader is not None, "analyzer.accel._reader is not built (pip install -e . with gcc)"
    real = decode._compiled_tcp4

    def off_by_one(reader, rec, base, out, addr):  # the compiled fast path getting one TTL wrong
        fast = real(reader, rec, base, out, addr)
        ttl, _ = out.made("ttl")
        if ttl is not None and fast.any():
            ttl[base + fast.argmax()] ^= 1
        return fast

    monkeypatch.setattr(decode, "_compiled_tcp4", off_by_one)
    found = harness.check(_case(tmp_path), tmp_path).findings
    assert ("differential", "packets: column ttl") in [(f.kind, f.signature) for f in found]


def test_harness_checks_each_commands_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.pcap"
    path.write_bytes(_case(tmp_path))
    assert harness.command_findings(["rtt", str(path), "--format", "json"]) == []
    monkeypatch.setattr("analyzer.cli.rtt_json_pieces", lambda *a: [b'{"targets": ['])
    found = harness.command_findings(["rtt", str(path), "--format", "json"])
    assert [(f.kind, f.signature) for f in found] == [("command", "rtt: invalid json output")]
    found = harness.command_findings(["rtt", str(tmp_path / "missing.pcap")], readable=False)
    assert found == []  # (no such file: one error line naming it, exit 2, as it should be)
    found = harness.command_findings(["rtt", str(tmp_path / "missing.pcap")], readable=True)
    assert [f.signature for f in found] == ["rtt: exit 2 on a capture the API reads"]


@pytest.mark.slow
def test_campaign_sees_crashes_hangs_and_sanitizer_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faults planted in the worker at given cases (an abort twice, a hang, a read past a heap block): each is
    a finding with its reproducer (the case's bytes), the two aborts one finding; the campaign goes on past
    them and, run again with more cases, resumes where it stopped."""
    monkeypatch.setenv("SYNLENS_FUZZ_INJECT", "crash:2,hang:4,overflow:6,crash:8")
    out = tmp_path / "campaign"
    state = campaign.run(out, cases=10, seed=5, block=5, timeout=10, log=lambda line: None)
    assert state.cases == 10 and sorted(state.done_blocks) == [0, 1]
    found = {f["kind"]: f for f in state.findings.values()}
    assert sorted(found) == ["crash", "hang", "sanitizer"]
    assert found["crash"]["count"] == 2 and (found["crash"]["first_case"], found["crash"]["last_case"]) == (2, 8)
    assert found["hang"]["signature"] == "hang in make" and found["hang"]["first_case"] == 4
    assert found["sanitizer"]["signature"].startswith("AddressSanitizer: heap-buffer-overflow")
    for f in state.findings.values():
        assert (out / f["reproducer"]).read_bytes() == campaign.make_case(5, f["first_case"], CORPUS).data
        assert json.loads((out / f["reproducer"]).with_name("finding.json").read_text())["signature"] == f["signature"]
    monkeypatch.setenv("SYNLENS_FUZZ_INJECT", "")
    state = campaign.run(out, cases=15, seed=5, block=5, timeout=10, log=lambda line: None)
    assert state.cases == 15 and len(state.findings) == 3 and sum(state.by_mutator.values()) >= 15


# ---------------------------------------------------------------------------------------------- properties

_blocks = st.one_of(
    st.tuples(st.just("idb"), st.lists(st.tuples(st.sampled_from([2, 9, 13, 14, 0x8001]), st.binary(max_size=9)),
                                       max_size=4), st.binary(max_size=12)),
    st.tuples(st.just("epb"), st.integers(0, 4), st.integers(0, (1 << 64) - 1), st.integers(0, 80)),
    st.tuples(st.just("other"), st.sampled_from([3, 4, 5, 0xBAD]), st.binary(max_size=16)),
)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(blocks=st.lists(_blocks, min_size=1, max_size=8), endian=st.sampled_from("<>"), lie=st.booleans())
def test_pcapng_interface_structures(tmp_path_factory: pytest.TempPathFactory, blocks: list, endian: str,
                                     lie: bool) -> None:
    """Any sequence of interface descriptions (any options, lengths that run past the block), packet blocks (any
    interface id, timestamp, length) and other blocks: the reader gives its table or a CaptureError, only
    CaptureWarnings, the same both ways, and every stage and command runs (harness.check finds nothing)."""
    frame = (seeds.REPO / "sample_pcaps" / "nat_qscan.pcap").read_bytes()[40:40 + 58]
    out = [formats.Block(formats.SHB, formats.struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1), endian)]
    for b in blocks:
        if b[0] == "idb":
            raw = formats.write_options(b[1], endian) + (b[2] if lie else b"")
            out.append(formats.Block(formats.IDB, formats.struct.pack(endian + "HHI", 1, 0, 0) + raw, endian))
        elif b[0] == "epb":
            _, ifid, ts, cap = b
            body = formats.struct.pack(endian + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, cap, cap)
            out.append(formats.Block(formats.EPB, body + frame[:cap], endian))
        else:
            out.append(formats.Block(b[1], b[2], endian))
    found = harness.check(formats.Pcapng(out).bytes(), tmp_path_factory.mktemp("ng")).findings
    assert found == []


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(options=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=12)), max_size=6),
       ext=st.lists(st.tuples(st.sampled_from([0, 43, 44, 51, 60, 135]), st.integers(0, 3)), max_size=5),
       v6=st.booleans())
def test_tcp_options_and_ipv6_extension_chains(tmp_path_factory: pytest.TempPathFactory, options: list, ext: list,
                                               v6: bool) -> None:
    """A SYN/ACK with any TCP option bytes (kinds and lengths that lie included), over IPv4 or over IPv6 behind
    any chain of extension headers, answering a SYN: the harness finds nothing."""
    base = (seeds.REPO / "sample_pcaps" / "nat_qscan.pcap").read_bytes()
    cap = formats.parse(base)
    cap.records = cap.records[:40]
    opts = b"".join(bytes([k, n]) + v for k, n, v in options)[:40]
    opts += bytes(-len(opts) % 4)
    for r in cap.records:
        lay = formats.layers(r.data, 1)
        if lay.l4 is None or lay.proto != 6:
            continue
        d = bytearray(r.data)
        doff = (d[lay.l4 + 12] >> 4) * 4
        if d[lay.l4 + 13] & 0x12 == 0x12:  # the SYN/ACKs
            d[lay.l4 + 20 : lay.l4 + doff] = opts
            d[lay.l4 + 12] = ((20 + len(opts)) // 4) << 4
            d[lay.l3 + 2 : lay.l3 + 4] = (len(d) - lay.l3).to_bytes(2, "big")
        r.data = bytes(d)
        r.wirelen = len(d)
    data = cap.bytes()
    if v6:
        data = mutators.to_ipv6(random.Random(0), data, CORPUS)
        chain = bytearray()
        cap = formats.parse(data)
        for r in cap.records:
            lay = formats.layers(r.data, 1)
            if lay.l3 is None:
                continue
            d = bytearray(r.data)
            nh, chain = d[lay.l3 + 6], b""
            for k, (kind, hl) in enumerate(ext):
                nxt = ext[k + 1][0] if k + 1 < len(ext) else nh
                size = 8 if kind == 44 else (hl + 2) * 4 if kind == 51 else (hl + 1) * 8
                chain += bytes([nxt, hl]) + bytes(size - 2)
            if ext:
                d[lay.l3 + 6] = ext[0][0]
            d[lay.l3 + 40 : lay.l3 + 40] = chain
            d[lay.l3 + 4 : lay.l3 + 6] = (len(d) - lay.l3 - 40).to_bytes(2, "big")
            r.data, r.wirelen = bytes(d), len(d)
        data = cap.bytes()
    assert harness.check(data, tmp_path_factory.mktemp("tcp")).findings == []


# ---------------------------------------------------------------------------------------------- the pass

@pytest.mark.slow
def test_fixed_seed_fuzz_pass(tmp_path: Path) -> None:
    """FUZZ_CASES cases of seed 19, the compiled code built with AddressSanitizer and UBSan: no traceback, no
    crash, no sanitizer report, no hang, no disagreement between the compiled and numpy readers. A finding
    names its signature and the reproducer the campaign saved (python -m tests.fuzz check FILE shows it)."""
    asan.build()
    state = campaign.run(tmp_path, cases=FUZZ_CASES, seed=19, jobs=1, timeout=120, log=lambda line: None)
    assert state.cases == FUZZ_CASES
    listed = [f"{f['kind']}: {sig} (case {f['first_case']}, {f['count']} cases) -> {tmp_path / f['reproducer']}"
              for sig, f in state.findings.items()]
    assert not state.findings, "\n".join(listed)


@pytest.mark.slow
def test_atheris_run(tmp_path: Path) -> None:
    """The coverage-guided fuzzer (atheris) runs the same check: 100 inputs, the seeds first, none a finding."""
    done = subprocess.run([sys.executable, "-m", "tests.fuzz.atheris_fuzz", str(tmp_path / "corpus"), "-runs=100",
                           "-seed=1", f"-artifact_prefix={tmp_path}/"], cwd=seeds.REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(seeds.REPO)}, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    ran = re.search(r"^Done (\d+) runs", done.stderr, re.MULTILINE)
    assert ran and int(ran.group(1)) >= 100, done.stderr[-3000:]  # (libFuzzer counts the seeds it ran first too)
    assert len(list((tmp_path / "corpus").iterdir())) >= len(CORPUS)  # (the seeds, and what it kept)
    assert not list(tmp_path.glob("crash-*"))


@pytest.mark.slow
def test_minimize_keeps_the_signature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A planted fault (the scan stage fails on any packet to port 443) in a capture of 40 records: the
    minimized reproducer still shows it, in one record."""
    from . import minimize

    real = analyzer.scans

    def fails_on_443(packets_table, *args: object, **kwargs: object) -> object:
        if (packets_table["dport"] == 443).any():
            raise ZeroDivisionError("planted")
        return real(packets_table, *args, **kwargs)

    monkeypatch.setattr(analyzer, "scans", fails_on_443)
    cap = formats.parse((seeds.REPO / "sample_pcaps" / "nat_qscan.pcap").read_bytes())
    cap.records = cap.records[:40]
    data = cap.bytes()
    found = minimize.signatures_in_process(data, tmp_path)
    assert len(found) == 1 and next(iter(found)).startswith("ZeroDivisionError")
    small = minimize.minimize(data, found, lambda d: minimize.signatures_in_process(d, tmp_path))
    assert found <= minimize.signatures_in_process(small, tmp_path)
    assert len(formats.parse(small).records) == 1 and len(small) < len(data) // 10
