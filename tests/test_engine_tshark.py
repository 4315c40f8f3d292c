"""Both engines, one table: analyzer.reading.tshark.read_tshark (Wireshark's dissectors, through pyshark)
against analyzer.read (the native reader).

1. Every small capture in sample_pcaps/ and tests/data/edge/ that the native reader reads cleanly (the
   deliberately broken ones, whose truth file expects an error or a warning, are left out) must give the
   same packets table, column by column, except the differences listed in KNOWN_DIFFERENCES with their
   reason.
2. A synthetic capture of dissection corners built here (ZOO): each frame must decode the same, or differ
   exactly in the columns its case lists, for the reason given. Where the native reader is wrong, the case
   is an xfail(strict) naming the bug: it starts failing, on purpose, the day the bug is fixed.
3. Errors: what tshark cannot read, a missing pyshark or tshark, a damaged capture.

pyshark is slow (each read starts a tshark, ~0.5 s, then about a thousand frames a second), so each file is
read once and the number of frames read is capped (MAX_PACKETS, PACKET_BUDGET).
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import struct
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("pyshark",
                    reason="pyshark not installed (pip install 'synlens[tshark]'): tshark engine not checked")
if shutil.which("tshark") is None:
    pytest.skip("tshark not installed (Debian: apt-get install tshark): tshark engine not checked",
                allow_module_level=True)

import analyzer
from analyzer.errors import CaptureError, CaptureWarning
from analyzer.reading.schema import PACKET_DTYPES
from analyzer.reading.tshark import read_tshark

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ADDRESS_COLUMNS = [c for c, dtype in PACKET_DTYPES.items() if dtype == "category"]
EDGE = HERE / "data" / "edge"
MAX_PACKETS = 1000  # per file: bigger captures are not "small" for the slow engine
PACKET_BUDGET = 2500  # over all files, edge cases first (most variety per frame), then samples by size


# ---------------------------------------------------------------------------------------------- helpers

def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with the address categoricals as plain text (None when absent), for comparing cells."""
    frame = frame.copy()
    for c in ADDRESS_COLUMNS:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    return frame


def same(a: object, b: object) -> bool:
    if a is None or a is pd.NA or b is None or b is pd.NA:
        return (a is None or a is pd.NA) and (b is None or b is pd.NA)
    return a == b


def differing_columns(native: pd.Series, tshark: pd.Series) -> dict[str, tuple[object, object]]:
    return {c: (native[c], tshark[c]) for c in native.index if not same(native[c], tshark[c])}


def read_native(path: Path) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaptureWarning)  # a clean capture reads without a warning
        return analyzer.read(path)


def truth_of(path: Path) -> dict:
    truth = path.parent / f"{path.name.split('.')[0]}.truth.json"
    return json.loads(truth.read_text(encoding="utf-8")) if truth.exists() else {}


# ---------------------------------------------------------------------------------------------- files

def _captures() -> list:
    """(path, skip reason or None) for each capture, in reading order, within the packet budget."""
    edge = sorted(p for p in EDGE.glob("*.pcap*") if p.suffix != ".json")
    samples = sorted((p for p in (REPO / "sample_pcaps").glob("*.pcap*") if p.suffix != ".json"),
                     key=lambda p: (p.stat().st_size, p.name))
    params, budget = [], PACKET_BUDGET
    for path in edge + samples:
        truth = truth_of(path)
        reason = None
        if truth.get("error") or truth.get("warning"):
            continue  # deliberately broken captures: their own tests below compare what both engines keep
        else:
            try:
                n = len(read_native(path))
            except (CaptureError, CaptureWarning) as e:
                n, reason = 0, f"the native reader does not read it cleanly: {e}"
            if reason is None and n > MAX_PACKETS:
                reason = f"{n} frames: too many for the slow engine (limit {MAX_PACKETS} a file)"
            elif reason is None and n > budget:
                reason = f"over the test's budget of {PACKET_BUDGET} frames read through tshark"
            elif reason is None:
                budget -= n
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(path, marks=marks, id=f"{path.parent.name}/{path.name}"))
    return params


# Where the engines disagree on a committed capture: {file: {(frame, column): why}}. In each case the
# native reader has a value and Wireshark shows none: Wireshark adds nothing from a header it could not
# read whole, while the native reader keeps every field whose bytes were captured.
KNOWN_DIFFERENCES: dict[str, dict[tuple[int, str], str]] = {
    "malformed.pcap": {
        (4, "seq"): "TCP header cut after 10 bytes by the caplen: Wireshark reads the fixed header (up to "
                    "the data offset) before adding any field after the ports, so it shows no sequence "
                    "number, though its 4 bytes were captured",
        (5, "seq"): "IPv6 payload length 8, less than the TCP header: Wireshark's TCP data ends at the IP "
                    "length, so as above it shows the ports only",
        (6, "eth_dst"): "a 10-byte runt frame: Wireshark's Ethernet dissector adds nothing to a frame "
                        "shorter than its 14-byte header; the native reader reads the 6 destination bytes "
                        "it has",
    },
}


@pytest.mark.parametrize("path", _captures())
def test_engines_give_the_same_table(path: Path) -> None:
    native = read_native(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaptureWarning)
        tshark = read_tshark(path)
    assert list(tshark.columns) == list(native.columns)
    assert {c: str(t) for c, t in tshark.dtypes.items()} == {c: str(t) for c, t in native.dtypes.items()}
    known = KNOWN_DIFFERENCES.get(path.name, {})
    if not any(column in ADDRESS_COLUMNS for _, column in known):
        for c in ADDRESS_COLUMNS:  # one shared list, in the same order: the categoricals are identical
            assert list(tshark[c].cat.categories) == list(native[c].cat.categories), c
    n, t = as_text(native), as_text(tshark)
    for (frame, column), why in known.items():
        row = frame - 1
        assert not same(n.at[row, column], t.at[row, column]), (
            f"frame {frame} {column}: the engines now agree; drop this known difference ({why})")
        n.at[row, column] = t.at[row, column] = None
    pd.testing.assert_frame_equal(t, n, check_dtype=True, obj=f"{path.name} (tshark engine vs native)")


# ---------------------------------------------------------------------------------------------- zoo
# Frames built byte by byte. Default addresses: 10.0.0.9 → 10.0.0.2, 2001:db8::9 → 2001:db8::2.

MAC_A, MAC_B = bytes.fromhex("020000000009"), bytes.fromhex("020000000002")


def _ip4(payload: bytes, proto: int = 6, src: str = "10.0.0.9", flags_frag: int = 0, ihl: int = 5,
         total: int | None = None, opts: bytes = b"") -> bytes:
    total = 20 + len(opts) + len(payload) if total is None else total
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 0x1234, flags_frag, 64, proto, 0,
                       ipaddress.ip_address(src).packed, bytes([10, 0, 0, 2])) + opts + payload


def _ip6(payload: bytes, nh: int = 6, src: str = "2001:db8::9", plen: int | None = None) -> bytes:
    plen = len(payload) if plen is None else plen
    return (struct.pack("!IHBB", 0x60000000, plen, nh, 64) + ipaddress.ip_address(src).packed
            + ipaddress.ip_address("2001:db8::2").packed + payload)


def _ext(nh: int, body: bytes = b"\x01\x04\0\0\0\0") -> bytes:
    """A hop-by-hop / destination-options / routing-like header: next header, (len+1)*8 bytes."""
    n = (2 + len(body) + 7) // 8
    return struct.pack("!BB", nh, n - 1) + body.ljust(n * 8 - 2, b"\0")


def _frag6(nh: int, offset: int, more: int, ident: int) -> bytes:
    return struct.pack("!BBHI", nh, 0, (offset << 3) | more, ident)


def _tcp(dport: int = 80, flags: int = 0x02, ack: int = 0, opts: bytes = b"", payload: bytes = b"",
         doff: int | None = None) -> bytes:
    opts += b"\0" * (-len(opts) % 4)
    doff = (20 + len(opts)) // 4 if doff is None else doff
    header = struct.pack("!HHIIHHHH", 40000, dport, 1000, ack, (doff << 12) | flags, 1024, 0, 0)
    return header + opts + payload


def _opts(hex_: str) -> bytes:
    return _tcp(opts=bytes.fromhex(hex_))


def _udp(dport: int = 9999, payload: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("!HHHH", 40000, dport, 8 + len(payload) if length is None else length, 0) + payload


def _icmp(typ: int, code: int, rest: bytes = b"\0\0\0\0", payload: bytes = b"") -> bytes:
    return struct.pack("!BBH", typ, code, 0) + rest + payload


def _eth(payload: bytes, etype: int = 0x0800) -> bytes:
    return MAC_B + MAC_A + struct.pack("!H", etype) + payload


def _eth6(payload: bytes) -> bytes:
    return _eth(payload, 0x86DD)


def _vlan(payload: bytes, vid: int, etype: int) -> bytes:
    return struct.pack("!HH", vid, etype) + payload


def _sll(proto: int, payload: bytes, hatype: int = 1, halen: int = 6, addr: bytes = MAC_A) -> bytes:
    return struct.pack("!HHH8sH", 0, hatype, halen, addr.ljust(8, b"\0"), proto) + payload


def _sll2(proto: int, payload: bytes) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 2, 1, 0, 6, MAC_A.ljust(8, b"\0")) + payload


def _arp(htype: int = 1, op: int = 2) -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", htype, 0x0800, 6, 4, op, MAC_B, bytes([10, 0, 0, 2]), MAC_A,
                       bytes([10, 0, 0, 9]))


def _quote4(typ: int, code: int, quoted: bytes, src: str = "10.0.0.9", rest: bytes = bytes(4)) -> bytes:
    """An ICMP error (in IPv4, over Ethernet) quoting `quoted`."""
    return _eth(_ip4(_icmp(typ, code, rest, quoted), proto=1, src=src))


def _quote6(typ: int, code: int, quoted: bytes, rest: bytes = bytes(4)) -> bytes:
    return _eth6(_ip6(_icmp(typ, code, rest, quoted), nh=58, src="2001:db8::1"))


NMAP_OPTS = "03030a01020405b4080affffffff000000000402"  # WS NOP MSS TS SACK_PERM
WINDOWS_OPTS = "020405b40103030801010402"  # MSS NOP WS NOP NOP SACK_PERM (NOPs repeated)
LINUX_OPTS = "020405b40402080a0001e2400000000001030307"  # MSS SACK_PERM TS NOP WS
STP = bytes.fromhex("424203000000000080000200000000010000000080000200000000018001000014000200")
NOT_DECODED = ("the native reader does not decode this encapsulation; decoding what it does not is what "
               "the tshark engine is for")
NOTHING_CUT = "Wireshark adds nothing from a header cut short; the native reader keeps the fields captured"
IP_COLUMNS = ("ip_version", "src", "dst", "ip_proto", "ttl", "ip_id", "ip_len")
TCP_COLUMNS = ("sport", "dport", "tcp_flags", "seq", "ack", "window", "payload_len")


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    linktype: int = 1
    differs: tuple[str, ...] = ()  # the columns where the engines are known to differ …
    why: str = ""  # … and why
    native_bug: str = ""  # the native reader is wrong: xfail(strict) until it is fixed


ZOO = [
    # TCP options: wire order, repeated kinds, more than 8, EOL, unknown kinds, bad lengths, values
    Case("nmap options", _eth(_ip4(_opts(NMAP_OPTS)))),
    Case("windows options", _eth(_ip4(_opts(WINDOWS_OPTS)))),
    Case("linux options", _eth(_ip4(_tcp(flags=0x12, ack=5, opts=bytes.fromhex(LINUX_OPTS))))),
    Case("10 NOPs then MSS", _eth(_ip4(_opts("01" * 10 + "020405b4")))),
    Case("EOL then junk", _eth(_ip4(_opts("020405b400ffff01")))),
    Case("experimental and MPTCP options", _eth(_ip4(_opts("fe04abcd1e0600000000020405b4")))),
    Case("MSS of length 3", _eth(_ip4(_opts("0203050101010101")))),
    Case("two MSS options", _eth(_ip4(_opts("020405b4020402180101")))),
    Case("window scale 15", _eth(_ip4(_opts("03030f01")))),
    Case("SACK blocks", _eth(_ip4(_tcp(flags=0x10, ack=7, opts=bytes.fromhex("0101050a0000000100000002"))))),
    Case("options cut by the snaplen", _eth(_ip4(_opts(LINUX_OPTS)))[:14 + 20 + 26]),
    Case("option longer than the header", _eth(_ip4(_opts("01010828"))), differs=("tcp_options",),
         why="Wireshark reports an option whose length runs past the header as text, without its kind; "
             "the native reader records the kind byte"),
    # TCP header oddities
    Case("data offset past the segment", _eth(_ip4(_tcp(doff=15, opts=b"\x01" * 4)))),
    Case("data offset 4", _eth(_ip4(_tcp(doff=4))), differs=("tcp_flags", "ack", "window"),
         why="Wireshark stops after a bogus header length (< 20); the native reader keeps the fixed fields"),
    Case("ACK clear, ack field set", _eth(_ip4(_tcp(ack=0xDEADBEEF)))),
    Case("NS, AE and reserved bits", _eth(_ip4(_tcp(flags=0x1C2 | 0xE00)))),
    Case("payload", _eth(_ip4(_tcp(flags=0x18, ack=1, payload=b"hello world")))),
    Case("SYN with payload", _eth(_ip4(_tcp(payload=b"GET / HTTP/1.0\r\n\r\n")))),
    # IPv4
    Case("IP options", _eth(_ip4(_tcp(), ihl=6, opts=b"\x01\x01\x01\x00"))),
    Case("first fragment", _eth(_ip4(_tcp(payload=b"x" * 16), flags_frag=0x2000))),
    Case("later fragment", _eth(_ip4(b"y" * 16, flags_frag=0x0003))),
    Case("don't fragment", _eth(_ip4(_tcp(), flags_frag=0x4000))),
    Case("IP header cut short", _eth(_ip4(_tcp()))[:14 + 16]),
    Case("IP length below the header length", _eth(_ip4(_tcp(), total=16)), differs=IP_COLUMNS,
         why="Wireshark stops at a bogus total length, before the addresses; the native reader keeps the "
             "header (and reads no transport header)"),
    Case("IP length 0", _eth(_ip4(_tcp(), total=0)), differs=IP_COLUMNS,
         why="as above (ip.tso_support is off, so Wireshark does not take 0 for 'as captured')"),
    Case("GRE tunnel: the outer header only",
         _eth(_ip4(struct.pack("!HH", 0, 0x0800) + _ip4(_tcp(22), src="192.168.0.1"), proto=47))),
    Case("IP in IP", _eth(_ip4(_ip4(_tcp(23), src="192.168.1.1"), proto=4))),
    Case("IPv6 in IPv4", _eth(_ip4(_ip6(_tcp()), proto=41))),
    # UDP
    Case("UDP", _eth(_ip4(_udp(payload=b"abcd"), proto=17))),
    Case("UDP length below 8", _eth(_ip4(_udp(payload=b"abcd", length=4), proto=17))),
    Case("UDP length past the IP length", _eth(_ip4(_udp(payload=b"abcd", length=100), proto=17))),
    Case("UDP with Ethernet padding", _eth(_ip4(_udp(7777, b"ab"), proto=17)) + bytes(20)),
    Case("UDP header cut short", _eth(_ip4(_udp(payload=b"abcd"), proto=17))[:14 + 20 + 3],
         differs=("sport",), why=NOTHING_CUT),
    # ICMP
    Case("ICMP timestamp", _eth(_ip4(_icmp(13, 0, struct.pack("!HH", 77, 3), bytes(12)), proto=1))),
    Case("ICMP address mask", _eth(_ip4(_icmp(17, 0, struct.pack("!HH", 78, 4), bytes(4)), proto=1))),
    Case("ICMP information", _eth(_ip4(_icmp(15, 0, struct.pack("!HH", 79, 5)), proto=1))),
    Case("ICMP cut short", _eth(_ip4(_icmp(8, 0, struct.pack("!HH", 9, 9)), proto=1))[:14 + 20 + 5],
         differs=("icmp_type", "icmp_code"), why=NOTHING_CUT),
    Case("TTL exceeded quoting UDP", _quote4(11, 0, _ip4(_udp(33434, bytes(12)), proto=17)[:28], "10.0.0.1")),
    Case("unreachable quoting an IP header only", _quote4(3, 1, _ip4(_tcp())[:20])),
    Case("unreachable quoting 4 TCP bytes", _quote4(3, 1, _ip4(_tcp())[:24])),
    Case("unreachable quoting 12 bytes", _quote4(3, 1, _ip4(_tcp())[:12])),
    Case("unreachable quoting ICMP", _quote4(3, 3, _ip4(_icmp(8, 0, bytes(4)), proto=1)[:28])),
    Case("unreachable quoting IP options", _quote4(11, 0, _ip4(_tcp(6667), ihl=6, opts=bytes(4))[:32])),
    Case("redirect", _quote4(5, 1, _ip4(_tcp(25))[:28], rest=bytes([10, 0, 0, 254]))),
    Case("ICMPv6 in IPv4", _eth(_ip4(_icmp(128, 0, struct.pack("!HH", 1, 2)), proto=58))),
    Case("unreachable quoting a later fragment", _quote4(3, 4, _ip4(b"z" * 8, flags_frag=0x10)[:28]),),
    # IPv6
    Case("ICMPv6 echo", _eth6(_ip6(_icmp(128, 0, struct.pack("!HH", 5, 6), b"ping"), nh=58))),
    Case("ICMPv6 neighbour solicitation", _eth6(_ip6(_icmp(135, 0, bytes(4), bytes(16)), nh=58))),
    Case("packet too big quoting hop-by-hop + TCP",
         _quote6(2, 0, _ip6(_ext(6) + _tcp(443), nh=0), rest=struct.pack("!I", 1280))),
    Case("unreachable quoting routing + dest options",
         _quote6(1, 3, _ip6(_ext(43) + struct.pack("!BBBB", 6, 0, 0, 0) + bytes(4) + _tcp(8000), nh=60))),
    Case("unreachable quoting a fragment header",
         _quote6(1, 4, _ip6(_frag6(17, 0, 1, 0xABCD) + _udp(53, b"q" * 8), nh=44)),),
    Case("first fragment", _eth6(_ip6(_frag6(6, 0, 1, 0x11223344) + _tcp(payload=b"x" * 8), nh=44))),
    Case("later fragment", _eth6(_ip6(_frag6(6, 3, 0, 0x11223344) + b"y" * 16, nh=44))),
    Case("atomic fragment", _eth6(_ip6(_frag6(6, 0, 0, 0x99) + _tcp(), nh=44))),
    Case("later fragment, next header dest options",
         _eth6(_ip6(_frag6(60, 3, 1, 0x55667788) + b"\x06\x00" + b"y" * 14, nh=44)),),
    Case("AH", _eth6(_ip6(struct.pack("!BBHII", 6, 4, 0, 0x100, 1) + bytes(12) + _tcp(), nh=51))),
    Case("routing header", _eth6(_ip6(struct.pack("!BBBB", 6, 0, 0, 0) + bytes(4) + _tcp(), nh=43))),
    Case("hop-by-hop, fragment, TCP", _eth6(_ip6(_ext(44) + _frag6(6, 0, 0, 0xFEED) + _tcp(8443), nh=0))),
    Case("two dest options around routing",
         _eth6(_ip6(_ext(43) + struct.pack("!BBBB", 60, 0, 0, 0) + bytes(4) + _ext(6) + _tcp(993), nh=60))),
    Case("UDP after hop-by-hop", _eth6(_ip6(_ext(17) + _udp(5353, b"12345"), nh=0))),
    Case("extension header cut short", _eth6(_ip6(_ext(6) + _tcp(), nh=0))[:14 + 40 + 4]),
    Case("extension header past the payload length",
         _eth6(_ip6(_ext(6, b"\x01\x14" + bytes(20)) + _tcp(), nh=0, plen=8))),
    Case("shim6", _eth6(_ip6(struct.pack("!BBBB", 6, 1, 0x81, 0) + bytes(12) + _tcp(), nh=140))),
    Case("mobility header", _eth6(_ip6(struct.pack("!BBBB", 6, 1, 1, 0) + bytes(12) + _tcp(), nh=135)),
         differs=TCP_COLUMNS,
         why="Wireshark decodes a mobility header as a final protocol (its payload protocol is 59, none, in "
             "practice); the native reader follows it to the TCP header"),
    Case("IPv6 header cut short", _eth6(_ip6(_tcp()))[:14 + 30]),
    Case("no next header", _eth6(_ip6(b"", nh=59))),
    Case("IPv4-mapped address", _eth6(_ip6(_tcp(), src="::ffff:10.0.0.9"))),
    Case("IPv6 in an IPv4 ethertype", _eth(b"\x65" + _ip4(_tcp())[1:])),
    # ARP, Ethernet, VLAN
    Case("ARP reply", _eth(_arp(), 0x0806)),
    Case("ARP cut short", _eth(_arp(), 0x0806)[:14 + 20]),
    Case("ARP over IEEE 802 hardware", _eth(_arp(htype=6, op=1), 0x0806)),
    Case("runt frame", _eth(b"")[:13], differs=("eth_src", "eth_dst"),
         why="Wireshark adds nothing from a frame shorter than the 14-byte Ethernet header; the native "
             "reader reads the addresses that were captured"),
    Case("unknown ethertype", _eth(bytes(46), 0x88B5)),
    Case("VLAN 0x9100", _eth(_vlan(_ip4(_tcp()), 300, 0x0800), 0x9100)),
    Case("three VLAN tags", _eth(_vlan(_vlan(_vlan(_ip4(_tcp()), 3, 0x0800), 2, 0x8100), 1, 0x8100), 0x88A8)),
    Case("802.3 frame (STP)", bytes.fromhex("0180c2000000") + MAC_A + struct.pack("!H", len(STP)) + STP,),
    Case("802.3 + LLC/SNAP carrying IPv4", _eth(bytes.fromhex("aaaa030000000800") + _ip4(_tcp(8080)), 52),
         differs=("ethertype", *IP_COLUMNS, *TCP_COLUMNS), why=NOT_DECODED),
    Case("PPPoE", _eth(struct.pack("!BBHH", 0x11, 0, 1, 46) + b"\x00\x21" + _ip4(_tcp(110)), 0x8864),
         differs=IP_COLUMNS + TCP_COLUMNS, why=NOT_DECODED),
    Case("MPLS", _eth(struct.pack("!I", (100 << 12) | 0x100 | 64) + _ip4(_tcp(179)), 0x8847),
         differs=IP_COLUMNS + TCP_COLUMNS, why=NOT_DECODED),
    # other link types
    Case("BSD loopback, AF 99", struct.pack("<I", 99) + _ip4(_tcp()), linktype=0),
    Case("BSD loopback, Linux AF_INET6 (10)", struct.pack("<I", 10) + _ip6(_tcp()), linktype=0,
         differs=("ethertype", *IP_COLUMNS[:-2], "ip_len", *TCP_COLUMNS),
         why="Wireshark's loopback dissector knows the BSD values of AF_INET6 (24, 28, 30), not Linux's 10"),
    Case("OpenBSD loopback, IPv4", struct.pack("!I", 2) + _ip4(_tcp()), linktype=108),
    Case("OpenBSD loopback, IPv6", struct.pack("!I", 24) + _ip6(_tcp()), linktype=108),
    Case("raw IP, bad version", b"\x50" + _ip4(_tcp())[1:], linktype=101),
    Case("raw IPv6 (229)", _ip6(_tcp()), linktype=229),
    Case("raw IP (14)", _ip4(_tcp()), linktype=14),
    Case("SLL loopback device", _sll(0x0800, _ip4(_tcp()), hatype=772, addr=bytes(6)), linktype=113),
    Case("SLL GRE device (4-byte address)",
         _sll(0x0800, _ip4(_tcp()), hatype=778, halen=4, addr=bytes([1, 2, 3, 4])), linktype=113),
    Case("SLL 802.2 LLC", _sll(0x0004, b"\x42\x42\x03" + bytes(30)), linktype=113),
    Case("SLL 802.11 device", _sll(0x0800, _ip4(_tcp()), hatype=801), linktype=113),
    Case("SLL cut short", _sll(0x0800, b"")[:10], linktype=113),
    Case("SLL VLAN", _sll(0x8100, _vlan(_ip4(_tcp()), 5, 0x0800)), linktype=113,
         differs=("vlan", "ethertype", *IP_COLUMNS, *TCP_COLUMNS), why=NOT_DECODED),
    Case("SLL2 VLAN", _sll2(0x8100, _vlan(_ip4(_tcp()), 5, 0x0800)), linktype=276,
         differs=("vlan", "ethertype", *IP_COLUMNS, *TCP_COLUMNS), why=NOT_DECODED),
    Case("PPP", b"\xff\x03\x00\x21" + _ip4(_tcp(21)), linktype=9,
         differs=("ethertype", *IP_COLUMNS, *TCP_COLUMNS), why=NOT_DECODED),
    Case("802.11 (no IP)", bytes(30), linktype=105),
    Case("IPv4 bytes on an Ethernet link", _ip4(_tcp())),
]


def _block(endian: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    size = struct.pack(endian + "I", 12 + len(body))
    return struct.pack(endian + "I", btype) + size + body + size


def _option(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _epb(endian: str, iface: int, units: int, data: bytes) -> bytes:
    return _block(endian, 6, struct.pack(endian + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(data),
                                         len(data)) + data)


def _pcapng(cases: list[Case]) -> bytes:
    """One section, one interface per link type (µs), one enhanced packet block per case."""
    linktypes = sorted({c.linktype for c in cases})
    out = _block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    for lt in linktypes:
        out += _block("<", 1, struct.pack("<HHI", lt, 0, 0))
    for i, c in enumerate(cases):
        out += _epb("<", linktypes.index(c.linktype), 1_700_000_000_000_000 + i * 1000, c.data)
    return out


def test_pcapng_sections_interfaces_and_clocks(tmp_path: Path) -> None:
    """Interface ids unique across sections, each interface's link type, binary and decimal if_tsresol,
    if_tsoffset, a big-endian section: the engines agree to the nanosecond."""
    frame, end = _eth(_ip4(_tcp())), b"\x00\x00\x00\x00"
    le, be = "<", ">"
    data = (_block(le, 0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
            + _block(le, 1, struct.pack("<HHI", 1, 0, 0) + _option(le, 9, bytes([0x80 | 20])) + end)  # 2^-20
            + _block(le, 1, struct.pack("<HHI", 113, 0, 0) + _option(le, 9, bytes([9]))
                     + _option(le, 14, struct.pack("<q", 100)) + end)  # ns, 100 s offset
            + _epb(le, 0, (1_700_000_000 << 20) + 12345, frame)
            + _epb(le, 1, 1_700_000_000_123_456_789, _sll(0x0800, _ip4(_tcp(22))))
            + _block(be, 0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))
            + _block(be, 1, struct.pack(">HHI", 101, 0, 0))
            + _block(be, 1, struct.pack(">HHI", 1, 0, 0) + _option(be, 9, bytes([3])) + end)  # ms
            + _epb(be, 1, 1_700_000_000_123, frame)
            + _epb(be, 0, 1_700_000_000_654_321, _ip4(_tcp())))
    path = tmp_path / "clocks.pcapng"
    path.write_bytes(data)
    native, tshark = read_native(path), read_tshark(path)
    assert tshark.iface.tolist() == [0, 1, 3, 2]
    assert tshark.linktype.tolist() == [1, 113, 1, 101]
    pd.testing.assert_frame_equal(as_text(tshark), as_text(native))


def test_frame_without_a_timestamp_ends_the_read_with_a_warning(tmp_path: Path) -> None:
    """pyshark cannot parse a frame without a timestamp (a pcapng simple packet block): the frames before
    it are kept, with a warning, rather than losing the whole capture."""
    frame = _eth(_ip4(_tcp()))
    path = tmp_path / "spb.pcapng"
    path.write_bytes(_block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
                     + _block("<", 1, struct.pack("<HHI", 1, 0, 0))
                     + _epb("<", 0, 1_700_000_000_000_000, frame)
                     + _block("<", 3, struct.pack("<I", len(frame)) + frame))
    with pytest.warns(CaptureWarning, match="frame 2"):
        tshark = read_tshark(path)
    pd.testing.assert_frame_equal(as_text(tshark), as_text(read_native(path).iloc[:1]))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = tmp_path_factory.mktemp("zoo") / "zoo.pcapng"
    path.write_bytes(_pcapng(ZOO))
    native, tshark = read_native(path), read_tshark(path)
    assert len(native) == len(tshark) == len(ZOO)
    return as_text(native), as_text(tshark)


def _zoo_params() -> list:
    params = []
    for i, c in enumerate(ZOO):
        bug = pytest.mark.xfail(strict=True, reason=f"native reader bug: {c.native_bug}")
        params.append(pytest.param(i, id=f"{i + 1}-{c.name}", marks=[bug] if c.native_bug else []))
    return params


@pytest.mark.parametrize("index", _zoo_params())
def test_zoo_frame(zoo: tuple[pd.DataFrame, pd.DataFrame], index: int) -> None:
    native, tshark = zoo
    case = ZOO[index]
    diff = differing_columns(native.iloc[index], tshark.iloc[index])
    assert set(diff) == set(case.differs), (f"{case.name}: columns differ {diff} (native, tshark); expected "
                                            f"{sorted(case.differs)} ({case.why or 'none'})")


def test_pcap_with_fcs_bits_in_the_link_type(tmp_path: Path) -> None:
    frame = _eth(_ip4(_tcp())) + bytes.fromhex("deadbeef")  # with its (unchecked) FCS
    path = tmp_path / "fcs.pcap"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 0x24000001)
                     + struct.pack("<IIII", 1_700_000_000, 0, len(frame), len(frame)) + frame)
    tshark = read_tshark(path)
    assert tshark.linktype.tolist() == [1]
    pd.testing.assert_frame_equal(as_text(tshark), as_text(read_native(path)))


# ---------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("name, problem", [("not_a_capture.txt", "format"), ("empty.pcap", "empty")])
def test_unreadable_file_raises_capture_error(name: str, problem: str) -> None:
    path = EDGE / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    with pytest.raises(CaptureError, match=problem) as e:
        read_tshark(path)
    assert e.value.path == str(path)


def test_missing_file_and_directory_raise_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="no such file"):
        read_tshark(tmp_path / "missing.pcap")
    with pytest.raises(CaptureError, match="directory"):
        read_tshark(tmp_path)


@pytest.mark.parametrize("name", ["truncated.pcap", "truncated_ng.pcapng", "bad_caplen.pcap"])
def test_damaged_capture_warns_and_keeps_the_frames_before_the_damage(name: str) -> None:
    path = EDGE / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    with pytest.warns(CaptureWarning):
        native = analyzer.read(path)
    with pytest.warns(CaptureWarning, match="cut short|bigger than"):
        tshark = read_tshark(path)
    pd.testing.assert_frame_equal(as_text(tshark), as_text(native))


def test_missing_pyshark_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyshark", None)  # import pyshark now raises ImportError
    with pytest.raises(CaptureError, match=r"pip install 'synlens\[tshark\]'"):
        read_tshark(EDGE / "basic.pcap")


def test_missing_tshark_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyshark.tshark.tshark as tshark_module

    def not_found(*_: object) -> str:
        raise tshark_module.TSharkNotFoundException("TShark not found")

    monkeypatch.setattr(tshark_module, "get_process_path", not_found)
    with pytest.raises(CaptureError, match="tshark"):
        read_tshark(EDGE / "basic.pcap")


def test_engine_option_reads_through_tshark() -> None:
    packets = analyzer.read(EDGE / "basic.pcap", engine="tshark")
    assert packets.attrs["engine"] == "tshark"
    assert len(packets) == len(analyzer.read(EDGE / "basic.pcap"))
    # and the CLI's --engine gives the user the same answer as the native reader
    import subprocess
    import sys

    def rtt(*engine: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "analyzer", "rtt", str(EDGE / "basic.pcap"), "--format", "json",
                              *engine], capture_output=True, text=True, check=True).stdout
        return json.loads(out)["targets"]

    assert rtt("--engine", "tshark") == rtt()
