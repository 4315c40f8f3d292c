"""Hostile captures: values a file format allows at their extremes, lengths that lie, and the faults a mutation
fuzz campaign found (issue 19), each with its minimal reproducer built here byte by byte.

What must hold for every one: the API raises `CaptureError` or warns `CaptureWarning`, nothing else; every
command gives its output, or a one-line error naming the file (exit 2), never a traceback; and what the format
specifies is read as libpcap's and Wireshark's readers read it, exactly (timestamps in integer ns).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zlib
from pathlib import Path

import make_edge_captures as gen  # (the edge captures' packet builders)
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import analyzer
from analyzer import accel as compiled
from analyzer.accel.keys import pack_into
from analyzer.analysis.groups import modes
from analyzer.cli import main as cli_main
from analyzer.reading import formats as capture

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
HELD = capture.HELD_NS  # timestamps are held within ±(2^62 - 1) ns of 1970
T0_S = 1_700_000_000


# ---------------------------------------------------------------------------------------------- builders

def probe_and_reply(reply_opts: bytes | None = None) -> tuple[bytes, bytes]:
    """Ethernet frames of one SYN (10.0.0.9:40000 → 10.0.0.2:22, MSS option) and its SYN/ACK; `reply_opts`
    replaces the SYN/ACK's option bytes (a multiple of 4)."""
    syn = gen.ipv4(gen.PROBER4, gen.TARGET4, gen.tcp(40000, 22, gen.SYN, 1000, opts=gen.NMAP_OPTS), ip_id=7)
    synack = gen.ipv4(gen.TARGET4, gen.PROBER4, gen.tcp(22, 40000, gen.SYN | gen.ACK, 5000, 1001, window=64240,
                                                        opts=gen.NMAP_OPTS), ip_id=8)
    reply = synack.data
    if reply_opts is not None:
        assert len(reply_opts) == 4  # the MSS option's place: lengths and checksums stay as they are
        reply = reply[:40] + reply_opts + reply[44:]
    return (gen.ethernet(syn, gen.MAC_PROBER, gen.MAC_TARGET).data,
            gen.ethernet(gen.Packet(reply, gen.ETH_IPV4, {}), gen.MAC_TARGET, gen.MAC_PROBER).data)


def pcap(frames: list[bytes], network: int = 1, fcs: bytes = b"") -> bytes:
    """A µs little-endian pcap of `frames` 1 ms apart, each followed by `fcs` (counted in caplen and wirelen)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, network)]
    for i, frame in enumerate(frames):
        data = frame + fcs
        out.append(struct.pack("<IIII", T0_S, i * 1000, len(data), len(data)) + data)
    return b"".join(out)


def idb(options: list[tuple[int, bytes]] = (), *, raw_options: bytes | None = None) -> bytes:
    """An Ethernet interface description block with these options (or these exact option bytes)."""
    body = struct.pack("<HHI", 1, 0, 65535)
    body += gen.ng_options("<", list(options)) if raw_options is None else raw_options
    return gen.ng_block("<", 1, body)


def epb(frame: bytes, units: int, iface: int = 0) -> bytes:
    body = struct.pack("<IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame))
    return gen.ng_block("<", 6, body + frame + bytes(-len(frame) % 4))


def pcapng(*blocks: bytes) -> bytes:
    return gen.ng_shb("<") + b"".join(blocks)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def read_both(path: str) -> tuple:
    """analyzer.read with the compiled reader and with the numpy one (the same table, the same warnings),
    recording every warning; any other exception than CaptureError fails the test that calls this."""
    results = []
    for fast in (compiled.COMPILED, compiled.NONE):
        saved = compiled.COMPILED
        compiled.COMPILED = fast
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                packets = analyzer.read(path)
        finally:
            compiled.COMPILED = saved
        results.append((packets, [w for w in caught]))
    (a, wa), (b, wb) = results
    assert a.equals(b) and a.attrs == b.attrs
    assert [str(w.message) for w in wa] == [str(w.message) for w in wb]
    assert all(issubclass(w.category, analyzer.CaptureWarning) for w in wa), [str(w.message) for w in wa]
    return a, [str(w.message) for w in wa]


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-m", "analyzer", *argv], capture_output=True, text=True, check=False,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


# ---------------------------------------------------------------------------------------------- pcap link type

def test_link_type_field_with_fcs_bits_reads_the_low_16_bits(tmp_path: Path) -> None:
    """The pcap header's link-type field is 32 bits: libpcap's LT_LINKTYPE is its low 16, and bit 26 says the
    top 4 bits hold the FCS length in 16-bit units (an Ethernet FCS: 2, so 0x24000001). Reproducer of the fault:
    OverflowError 'Python integer 16777216 out of bounds for uint16'."""
    frames = probe_and_reply()
    plain, _ = read_both(write(tmp_path, "plain.pcap", pcap(list(frames))))
    fcs = b"\xde\xad\xbe\xef"
    with_fcs, messages = read_both(write(tmp_path, "fcs.pcap", pcap(list(frames), 0x24000001, fcs)))
    assert messages == []
    assert (with_fcs["linktype"] == 1).all()
    assert (with_fcs["caplen"] == plain["caplen"] + 4).all()  # the file's lengths, FCS included
    decoded = [c for c in plain.columns if c not in ("caplen", "wirelen")]
    assert with_fcs[decoded].equals(plain[decoded])
    # The reserved bits (16-25) are ignored, as libpcap ignores them; no FCS flag: no FCS.
    reserved, _ = read_both(write(tmp_path, "reserved.pcap", pcap(list(frames), 0x03FF0001 | 0xF0000000)))
    assert reserved.equals(plain)
    for argv in (["rtt"], ["scans"], ["hosts"]):
        done = run_cli(*argv, str(tmp_path / "fcs.pcap"))
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_fcs_bytes_are_not_read_as_packet_data(tmp_path: Path) -> None:
    """A TCP header whose data offset promises 4 bytes of options, cut after its fixed 20 bytes: the 4 bytes that
    follow on the wire are the FCS, not an MSS option (they spell one here: kind 2, length 4, 1460)."""
    syn, _ = probe_and_reply()
    cut = bytearray(syn[:54])  # Ethernet + IPv4 + the TCP fixed header; data offset 6 (one option word)
    fcs = b"\x02\x04\x05\xb4"
    with_fcs, _ = read_both(write(tmp_path, "fcs.pcap", pcap([bytes(cut)], 0x24000001, fcs)))
    assert with_fcs["mss"].isna().all() and with_fcs["tcp_options"].isna().all()
    without_flag, _ = read_both(write(tmp_path, "nofcs.pcap", pcap([bytes(cut)], 1, fcs)))
    assert without_flag["mss"].tolist() == [1460]  # the same bytes as packet data: what the flag changes


# ---------------------------------------------------------------------------------------------- pcapng time

def expected_ns(units: int, binary: bool, exp: int, offset_s: int = 0) -> int:
    return min(max(units * 10**9 // ((2 if binary else 10) ** exp) + offset_s * 10**9, -HELD), HELD)


@pytest.mark.parametrize("binary", [False, True], ids=["decimal", "binary"])
def test_every_if_tsresol_reads_exact_integer_ns(tmp_path: Path, binary: bool) -> None:
    """if_tsresol is 10^-e or 2^-e seconds, e up to 127 (pcapng spec): each read exactly, floor(units × 10^9 /
    resolution) as Python integers compute it (held within 2^62 - 1 ns of 1970). Reproducers of the faults: a decimal exponent of 29 or more, a
    binary one of 65 or more (OverflowError); binary exponents above 32 were also read inexactly (2^30 taken for
    10^9)."""
    syn, reply = probe_and_reply()
    units = (T0_S << 32) | 0x89ABCDEF, (1 << 64) - 1  # a date in 2^-32 s; the largest timestamp
    for exp in range(128):
        data = pcapng(idb([(9, bytes([binary << 7 | exp]))]), epb(syn, units[0]), epb(reply, units[1]))
        packets, messages = read_both(write(tmp_path, f"res{exp}.pcapng", data))
        want = [expected_ns(u, binary, exp) for u in units]
        assert packets["ts_ns"].tolist() == want, (exp, packets["ts_ns"].tolist(), want)
        beyond = sum(u * 10**9 // ((2 if binary else 10) ** exp) > HELD for u in units)
        assert bool(messages) == bool(beyond), (exp, messages)


@pytest.mark.parametrize("offset_s", [1, -1, -T0_S, 2**32, -(2**32), 2**62, INT64_MIN, INT64_MAX, -9_223_372_037,
                                      2_911_000_000, -4_611_686_018])
def test_if_tsoffset_negative_or_huge(tmp_path: Path, offset_s: int) -> None:
    """if_tsoffset is a signed 64-bit count of seconds added to every timestamp (pcapng spec; Wireshark adds
    it). Exact where the sum lies within 2^62 - 1 ns of 1970 (1823 to 2116: the difference of any two timestamps,
    and a timestamp plus any window the analysis takes, then fit in 64 bits); beyond, held at the nearer end with
    a warning. Reproducer of the fault: an offset whose nanoseconds pass 64 bits (OverflowError)."""
    syn, reply = probe_and_reply()
    units = (T0_S * 10**6, T0_S * 10**6 + 250)
    data = pcapng(idb([(14, struct.pack("<q", offset_s))]), epb(syn, units[0]), epb(reply, units[1]))
    packets, messages = read_both(write(tmp_path, "off.pcapng", data))
    want = [expected_ns(u, False, 6, offset_s) for u in units]
    assert packets["ts_ns"].tolist() == want
    exact = [u * 1000 + offset_s * 10**9 for u in units]
    assert bool(messages) == (want != exact), messages
    if want != exact:
        assert "lie outside the years 1823 to 2116" in messages[0]
    done = run_cli("rtt", "--format", "json", str(tmp_path / "off.pcapng"))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_interfaces_differ_in_resolution_and_offset(tmp_path: Path) -> None:
    """Each packet takes its own interface's if_tsresol and if_tsoffset."""
    syn, reply = probe_and_reply()
    ifaces = [idb([(9, b"\x09")]), idb([(9, bytes([0x80 | 100])), (14, struct.pack("<q", -5))]), idb([]),
              idb([(14, struct.pack("<q", INT64_MAX))])]
    spec = [(0, 1 << 62, False, 9, 0), (1, (1 << 64) - 1, True, 100, -5), (2, 123_456_789, False, 6, 0),
            (3, 5, False, 6, INT64_MAX), (0, 7, False, 9, 0)]
    data = pcapng(*ifaces, *[epb(syn if i % 2 else reply, u, iface) for i, (iface, u, *_) in enumerate(spec)])
    packets, messages = read_both(write(tmp_path, "mixed.pcapng", data))
    assert packets["ts_ns"].tolist() == [expected_ns(u, b, e, o) for _, u, b, e, o in spec]
    assert packets["iface"].tolist() == [s[0] for s in spec]
    assert len(messages) == 1 and messages[0].startswith(f"{tmp_path / 'mixed.pcapng'}: 2 packet timestamp(s)")


# ---------------------------------------------------------------------------------------------- pcapng options

@pytest.mark.parametrize("options", [
    struct.pack("<HH", 9, 1),  # if_tsresol whose value byte is past the block (was IndexError)
    struct.pack("<HH", 14, 8) + b"\0\0\0\0",  # if_tsoffset with 4 of its 8 bytes (was struct.error)
    struct.pack("<HH", 2, 0xFFFF) + b"name",  # if_name claiming 65,535 bytes
    struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 14, 200),  # a good option, then one past the end
], ids=["tsresol", "tsoffset", "name", "after-good"])
def test_interface_option_past_its_block(tmp_path: Path, options: bytes) -> None:
    """An option whose length runs past the end of its interface description: that option and the ones after
    it are not read (a warning says so); everything before, and every packet, is."""
    syn, reply = probe_and_reply()
    data = pcapng(idb(raw_options=options), epb(syn, T0_S * 10**6), epb(reply, T0_S * 10**6 + 300))
    packets, messages = read_both(write(tmp_path, "opt.pcapng", data))
    assert len(packets) == 2 and packets["sport"].tolist() == [40000, 22]
    assert len(messages) == 1 and "runs past the block's end (the first at byte 28)" in messages[0]
    resolution_ns = 1 if options.startswith(struct.pack("<HHB", 9, 1, 9)) else 1000  # the good if_tsresol read
    assert packets["ts_ns"].tolist() == [T0_S * 10**6 * resolution_ns, (T0_S * 10**6 + 300) * resolution_ns]
    for command in ("rtt", "scans", "hosts"):
        done = run_cli(command, str(tmp_path / "opt.pcapng"))
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert "runs past the block's end" in done.stderr


def test_65536_interfaces(tmp_path: Path) -> None:
    """A section may describe 65,536 interfaces (pcapng's ids are 32-bit; the table's iface column holds 16):
    each packet has its own interface's link type and time. The 65,537th stops the read with a warning. (The
    time per packet no longer grows with the interfaces: they are looked up by table, not one by one.)"""
    syn, reply = probe_and_reply()
    n = 1 << 16
    descriptions = [idb([(9, b"\x09")]) if i % 3 else idb([]) for i in range(n)]
    used = [0, 1, 2, n - 1, 40_000]
    data = pcapng(*descriptions, *[epb(syn if k % 2 else reply, 1_000_000_000 + k, i) for k, i in enumerate(used)])
    packets, messages = read_both(write(tmp_path, "many.pcapng", data))
    assert messages == []
    assert packets["iface"].tolist() == used
    assert packets["ts_ns"].tolist() == [(1_000_000_000 + k) * (1 if i % 3 else 1000) for k, i in enumerate(used)]
    over, messages = read_both(write(tmp_path, "over.pcapng", pcapng(*descriptions, idb([]), epb(syn, 5))))
    assert len(over) == 0 and "is the 65,537th; stopping there" in messages[0]


# ---------------------------------------------------------------------------------------------- TCP options

# Each kind runs every command in a process of its own: the fast suite takes one, --all every one.
@pytest.mark.parametrize("first_kind", [128, *(pytest.param(k, marks=pytest.mark.slow) for k in (253, 254, 255))])
def test_synack_whose_first_option_kind_is_128_or_more(tmp_path: Path, first_kind: int) -> None:
    """An experimental TCP option (RFC 4727: kinds 253, 254) first in a SYN/ACK puts the option layout's top bit
    at 2^63. Reproducer of the fault: `synlens rtt` died in the reply-signal families (OverflowError in
    accel.keys.pack_into). Every command reads it; the layout names the kind."""
    frames = probe_and_reply(bytes([first_kind, 4, 0x12, 0x34]))
    path = write(tmp_path, "opt.pcap", pcap(list(frames)))
    packets, _ = read_both(path)
    assert packets["tcp_options"].tolist() == [0x02 << 56, first_kind << 56]
    for argv in (["rtt"], ["rtt", "--format", "json"], ["rtt", "--format", "csv"], ["rtt", "--signals", "rtt"],
                 ["scans"], ["hosts"], ["hosts", "--format", "json"], ["report", "-o", str(tmp_path / "r.html")]):
        done = run_cli(*argv, path)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (argv, done.stderr)
    hosts = run_cli("hosts", path).stdout
    assert f"options {first_kind}" in hosts or str(first_kind) in hosts, hosts


UINT_TYPES = [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64]


@settings(max_examples=300, deadline=None)
@given(dtype=st.sampled_from(UINT_TYPES), data=st.data(), use_compiled=st.booleans(), bits_before=st.integers(0, 20))
def test_pack_into_takes_any_integers(dtype, data, use_compiled: bool, bits_before: int) -> None:
    """accel.keys.pack_into (every packed key: the matcher's, modes, so every option-layout consumer) for any values
    of any integer type up to 64 bits, to the ends of its range: word = (word << bits) | (values - lo), against
    Python integers; with `keep`, values outside [lo, hi] dropped."""
    info = np.iinfo(dtype)
    ends = [int(info.min), int(info.max), int(info.max) - 1, int(info.max) // 2 + 1]  # (2^63 for uint64)
    value = st.one_of(st.sampled_from(ends), st.integers(int(info.min), int(info.max)))
    values = data.draw(st.lists(value, min_size=1, max_size=30))
    lo = data.draw(st.one_of(st.just(min(values)), st.integers(int(info.min), min(values))))
    hi = data.draw(st.one_of(st.just(max(values)), st.integers(max(values), int(info.max))))
    bits = max((hi - lo).bit_length(), 1) if hi - lo < 1 << 63 or bits_before == 0 else 64
    if bits == 64:
        bits_before = 0
    start = data.draw(st.lists(st.integers(0, (1 << bits_before) - 1), min_size=len(values), max_size=len(values)))
    arr = np.array(values, dtype)
    word = np.array(start, np.uint64)
    saved = compiled.COMPILED
    compiled.COMPILED = saved if use_compiled else compiled.NONE
    try:
        pack_into(word, arr, lo, hi, bits)
        keep = np.ones(len(values), bool)
        narrow_lo = data.draw(st.integers(lo, hi))
        kept = np.zeros(len(values), np.uint64)
        pack_into(kept, arr, narrow_lo, hi, bits, keep)
    finally:
        compiled.COMPILED = saved
    assert word.tolist() == [((s << bits) | (v - lo)) % (1 << 64) for s, v in zip(start, values)]
    assert keep.tolist() == [narrow_lo <= v <= hi for v in values]
    assert kept.tolist() == [(v - narrow_lo) if narrow_lo <= v <= hi else 0 for v in values]


def test_modes_of_uint64_values_above_2_63() -> None:
    """groups.modes (the reply signals' per-port mode of window and option layout) over uint64 layouts whose top
    bit is set."""
    port = np.array([22, 22, 22, 23, 23])
    layouts = np.array([254 << 56, 254 << 56, 253 << 56, 255 << 56, 253 << 56 | 5], np.uint64)
    window = np.array([1, 1, 1, 2, 2], np.int32)
    for fast in (compiled.COMPILED, compiled.NONE):
        saved = compiled.COMPILED
        compiled.COMPILED = fast
        try:
            got_port, (got_window, got_layout), count = modes(port, [window, layouts])
        finally:
            compiled.COMPILED = saved
        assert got_port.tolist() == [22, 23] and count.tolist() == [2, 1]
        assert got_layout.tolist() == [254 << 56, 253 << 56 | 5] and got_window.tolist() == [1, 2]


# ---------------------------------------------------------------------------------------------- gzip

def gzip_of_repeats(header: bytes, unit: bytes, count: int) -> bytes:
    """gzip (one member, compressed as it goes) of `header` and then `unit` `count` times."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [c.compress(header)]
    out += [c.compress(unit) for _ in range(count)]
    return b"".join(out) + c.flush()


def test_gzip_bomb_reads_a_bounded_prefix(tmp_path: Path) -> None:
    """A .pcap.gz of 4,096 records of 65,535 zero bytes inflates about 1,000 times (256 MiB from 260 kB): it is
    read up to the bound (INFLATE_FLOOR here, as 100 × the file is less), streamed, with a warning naming it; the
    reader's memory stays near the bound, not the inflated size."""
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    record = struct.pack("<IIII", T0_S, 0, 65535, 65535) + bytes(65535)
    data = gzip_of_repeats(header, record, 4096)
    path = write(tmp_path, "bomb.pcap.gz", data)
    bound = max(capture.INFLATE_FLOOR, capture.INFLATE_RATIO * len(data))
    assert bound == capture.INFLATE_FLOOR < 24 + 4096 * len(record)
    tracemalloc.start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            records = capture.read_records(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(records) == (bound - 24) // len(record)
    assert len(records.data) == bound
    messages = [str(w.message) for w in caught]
    assert any(f"inflates past {bound:,} bytes" in m and "gunzip it to read it all" in m for m in messages), messages
    assert all(issubclass(w.category, analyzer.CaptureWarning) for w in caught)
    assert peak < 2 * bound, f"peak {peak / 2**20:.0f} MiB for a bound of {bound / 2**20:.0f} MiB"
    done = run_cli("rtt", path)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "decompression bomb" in done.stderr


def test_gzip_bound_grows_with_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past INFLATE_FLOOR, a capture may inflate to INFLATE_RATIO times its compressed size: a capture that
    compresses as real ones do (here about 4 times, random payloads) is read whole."""
    monkeypatch.setattr(capture, "INFLATE_FLOOR", 1 << 16)
    rng = np.random.default_rng(1)
    frames = [bytes(rng.integers(0, 256, 1000, dtype=np.uint8)) for _ in range(300)]
    plain = pcap(frames)
    packed = zlib.compressobj(6, zlib.DEFLATED, 31)
    data = packed.compress(plain) + packed.flush()
    assert len(plain) > capture.INFLATE_FLOOR
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records = capture.read_records(write(tmp_path, "fine.pcap.gz", data))
    assert len(records) == 300
    monkeypatch.setattr(capture, "INFLATE_RATIO", 1)  # the same file, allowed its own size only
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = capture.read_records(str(tmp_path / "fine.pcap.gz"))
    assert len(records.data) == len(data) and len(records) < 300
    assert f"inflates past {len(data):,} bytes" in str(caught[0].message)
    assert "capture cut short inside record" in str(caught[1].message)  # (the walk then meets the bound)


# ---------------------------------------------------------------------------------------------- memory

@pytest.mark.slow
def test_memory_running_out_is_a_one_line_error(tmp_path: Path) -> None:
    """A command whose capture needs more memory than the process may have (RLIMIT_AS set, once the libraries are
    loaded, to 150 MB more than the process holds; the capture inflates to 256 MiB) ends with one line naming the
    file, exit 2, no traceback: MemoryError becomes `CaptureError` in the reader, and a one-line error anywhere
    else in a command."""
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    path = write(tmp_path, "big.pcap.gz", gzip_of_repeats(header, struct.pack("<IIII", T0_S, 0, 0, 0), 1 << 24))
    program = f"""
import resource, sys
sys.argv = ["synlens", "rtt", {path!r}]
import analyzer.cli, analyzer.analysis.signals, analyzer.analysis.stats, scipy.special
size = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (150 << 20), resource.RLIM_INFINITY))
sys.exit(analyzer.cli.main())
"""
    done = subprocess.run([sys.executable, "-P", "-c", program], capture_output=True, text=True, check=False,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"}, timeout=300)
    errors = [line for line in done.stderr.splitlines() if not line.startswith("synlens: warning:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and errors[0].startswith(f"synlens: error: {path}: not enough memory"), done.stderr


def test_memory_error_after_reading_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    """MemoryError from any step of a command (here the matcher, as numpy raises it when an array cannot be
    allocated) is the same one-line error."""
    path = write(tmp_path, "ok.pcap", pcap(list(probe_and_reply())))

    def no_memory(*args: object, **kwargs: object) -> None:
        np.empty(1 << 62, np.uint8)  # numpy's own MemoryError (its _ArrayMemoryError)

    monkeypatch.setattr("analyzer.pipeline.match_in_slices", no_memory)
    for command in ("rtt", "scans", "hosts"):
        assert cli_main([command, path]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"synlens: error: {path}: not enough memory to analyse it ("), err


# ---------------------------------------------------------------------------------------------- found by fuzzing

def test_rtt_csv_of_a_capture_without_tcp_probes(tmp_path: Path) -> None:
    """A capture with no TCP probe (one UDP datagram and its answer): signal_families gave a table without a
    `family` column when no port was probed, and `synlens rtt --format csv` died on it (KeyError; the sample
    scans_udp.pcap met it unchanged). Now: the CSV header alone, as for any capture with no port to show."""
    query = gen.ipv4(gen.PROBER4, gen.TARGET4, gen.udp(40000, 53, gen.DNS_QUERY), ip_id=1)
    answer = gen.ipv4(gen.TARGET4, gen.PROBER4, gen.udp(53, 40000, gen.DNS_QUERY), ip_id=2)
    frames = [gen.ethernet(p, gen.MAC_PROBER, gen.MAC_TARGET).data for p in (query, answer)]
    path = write(tmp_path, "udp.pcap", pcap(frames))
    packets, _ = read_both(path)
    ports, _ = analyzer.signal_families(packets, analyzer.match(packets))
    assert len(ports) == 0 and "family" in ports.columns and "rtt_family" in ports.columns
    done = run_cli("rtt", "--format", "csv", path)
    assert done.returncode == 0 and done.stderr.startswith("synlens: note: no bare SYN probe"), done.stderr
    assert len(done.stderr.splitlines()) == 1  # (the note, no traceback)
    assert done.stdout.splitlines() == [("target,port,protocol,family,family_kind,sent,received,loss,retransmissions,"
                                         "samples,mean_us,stddev_us,min_us,median_us,p95_us")]


def test_hosts_of_a_capture_without_one_address(tmp_path: Path) -> None:
    """Found by a fuzz campaign (seed 44: the spam bot's capture, its link type flipped to 147, a user DLT the
    reader does not decode): a packets table whose address columns hold no address at all. `hosts` finds no
    host (it looked up each packet's address code -1 among no addresses: IndexError), through the API and the
    command line."""
    path = write(tmp_path, "user_dlt.pcap", pcap([bytes(range(60)), bytes(60)], network=147))
    packets = analyzer.read(path)
    assert len(packets) == 2 and packets["src"].isna().all() and not len(packets["src"].cat.categories)
    found = analyzer.scans(packets, analyzer.match(packets))
    assert analyzer.hosts(packets, analyzer.match(packets), found.states, found.scans).empty
    assert analyzer.hosts(packets).empty
    for command in ("hosts", "scans"):
        done = run_cli(command, path)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_scan_of_a_capture_whose_times_are_held_at_the_readers_ends(tmp_path) -> None:
    """Found by the fixed-seed fuzz pass (tests/data/fuzz/clamped_times_scan.pcapng, minimized by `python -m
    tests.fuzz minimize`): pcapng times far outside any real capture's are held at the ends of what
    the reader keeps (2^62 ns either side of 1970), and the scan stage's time margins around them must not overflow
    (a RuntimeWarning on stderr): the capture's one warning, no other."""
    path = Path(__file__).resolve().parent / "data" / "fuzz" / "clamped_times_scan.pcapng"
    for command in ("scans", "hosts"):
        done = run_cli(command, path)
        lines = done.stderr.splitlines()
        assert done.returncode == 0 and all(line.startswith("synlens: warning: ") for line in lines), done.stderr
        assert any("1823 to 2116" in line for line in lines)
