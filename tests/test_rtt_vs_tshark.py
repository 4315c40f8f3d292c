"""Our RTTs equal those computed from tshark's raw fields on the same captures, to the microsecond."""

import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

import analyzer

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = sorted((ROOT / "sample_pcaps").glob("nat_*.pcap"))


def tshark_rtts(path: Path) -> dict[tuple, int]:
    """RTT in ns per (src, sport, dst, dport, seq) of each bare SYN, paired by tshark's raw seq/ack fields."""
    fields = ["frame.time_epoch", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.srcport", "tcp.dstport",
              "tcp.flags", "tcp.seq_raw", "tcp.ack_raw"]
    cmd = ["tshark", "-n", "-r", str(path), "-Y", "tcp && !icmp && !icmpv6", "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    probes, rtts = {}, {}
    for line in out.splitlines():
        t, s4, s6, d4, d6, sp, dp, fl, seq, ack = line.split("\t")
        ts = int(Decimal(t) * 1_000_000_000)
        src, dst, flags = s4 or s6, d4 or d6, int(fl, 16)
        if flags & 0x17 == 0x02:  # bare SYN
            probes.setdefault((src, int(sp), dst, int(dp), int(seq)), ts)
        elif flags & 0x12 == 0x12 or flags & 0x04:  # SYN/ACK or RST answering it
            key = (dst, int(dp), src, int(sp), (int(ack) - 1) % 2**32)
            if key in probes and key not in rtts:
                rtts[key] = ts - probes[key]
    return rtts


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_rtts_equal_tsharks(capture):
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed (apt-get install tshark): cannot cross-check")
    ours = analyzer.match(analyzer.read(capture))
    ours = ours[ours["rtt_ns"].notna() & ours["flags"].eq(2) & ours["reply_kind"].isin(["syn-ack", "rst"])]
    mine = {(str(r.src), int(r.sport), str(r.dst), int(r.dport), int(r.seq)): int(r.rtt_ns)
            for r in ours.itertuples()}
    theirs = tshark_rtts(capture)
    assert len(mine) >= 10
    assert set(mine) == set(theirs)
    for key, rtt in mine.items():
        assert abs(rtt - theirs[key]) < 1000, key  # tshark prints epoch times to the ns; we agree within 1 µs
