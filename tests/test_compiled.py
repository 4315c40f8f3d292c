"""The compiled code (analyzer/accel/_reader.c, _sort.c) against the numpy code it replaces, which is the reference.

The reader's loops (accel/walk.py: the classic pcap record walk and pcapng's runs of enhanced packet blocks;
accel/decode.py: the Ethernet/IPv4/TCP decode, which tests/test_edge_captures.py also compares with the general
layers on fuzzed frames). Here: every bundled sample and every edge capture read both ways
gives the same table, attributes and warnings; record chains with random lengths (absurd ones, cut records,
a trailing partial header) stop at the same record with the same damage message; bad arguments raise.
The lab's captures are compared in tests/lab/test_scans_lab.py. And the radix sort of packed keys (sort_u64) against
numpy's sort, the matcher's key order (key_order) against its numpy order, and every sample analysed (matching,
signals, scans, hosts) with them and without them.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analyzer.accel
from analyzer import read
from analyzer.accel.order import latest_in_runs
from analyzer.reading.formats import read_records

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SAMPLES = sorted(p.name for p in (REPO / "sample_pcaps").iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))
EDGE = sorted(p.name for p in (HERE / "data" / "edge").iterdir() if ".truth" not in p.name)


def read_both(monkeypatch, path: Path, reader=read) -> tuple[tuple, tuple]:
    """(result, warning messages) read with the compiled loops and with the numpy code; the result is the
    CaptureError where reading fails."""
    out = []
    for fast in (analyzer.accel.COMPILED, analyzer.accel.NONE):
        with monkeypatch.context() as m, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m.setattr(analyzer.accel, "COMPILED", fast)
            try:
                result = reader(str(path))
            except analyzer.CaptureError as e:
                result = e
            out.append((result, [str(w.message) for w in caught]))
    return out[0], out[1]


def assert_same_reading(both: tuple[tuple, tuple]) -> None:
    """The same records (or the same error), and the same warnings."""
    (fast, fast_warned), (numpy, numpy_warned) = both
    if isinstance(fast, analyzer.CaptureError) or isinstance(numpy, analyzer.CaptureError):
        assert str(fast) == str(numpy)
    else:
        assert_same_records(fast, numpy)
    assert fast_warned == numpy_warned


def cut_maybe(rng: np.random.Generator, raw: bytes, keep: int) -> bytes:
    """raw, or (three times in ten) raw cut after a random byte past its first `keep`."""
    return raw[: int(rng.integers(keep, len(raw) + 1))] if rng.random() < 0.3 else raw


def test_compiled_loops_are_built() -> None:
    """setup.py builds them wherever a C compiler is (CI installs gcc); SYNLENS_PURE=1 turns them off; a build
    of other sources (another API number) is not used."""
    pure = os.environ.get("SYNLENS_PURE", "") not in ("", "0")
    built = [module is not None for module in (analyzer.accel.COMPILED.reader, analyzer.accel.COMPILED.sort)]
    assert built == [not pure] * 2, "analyzer.accel's _reader or _sort not built or stale: pip install -e . (needs gcc)"


@pytest.mark.parametrize("name", ["_reader", "_sort"])
def test_a_stale_build_is_not_used(monkeypatch, name: str) -> None:
    """A build left from older sources (its API number differs) is ignored rather than called with arguments it
    does not take; the numpy code runs instead."""
    import importlib

    module = importlib.import_module(f"analyzer.accel.{name}")
    monkeypatch.delenv("SYNLENS_PURE", raising=False)
    assert analyzer.accel._load(name) is module
    monkeypatch.setattr(module, "API", analyzer.accel.API[name] - 1)
    assert analyzer.accel._load(name) is None


@pytest.fixture(autouse=True)
def _built() -> None:
    if None in (analyzer.accel.COMPILED.reader, analyzer.accel.COMPILED.sort):
        pytest.fail("analyzer.accel's _reader or _sort is not built, or SYNLENS_PURE is set: nothing to compare")


def assert_same_records(a, b) -> None:
    for field in ("offset", "caplen", "wirelen", "ts_ns", "linktype", "iface"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert (a.format, a.compressed, len(a.data)) == (b.format, b.compressed, len(b.data))


@pytest.mark.parametrize("name", SAMPLES)
def test_samples_read_alike(monkeypatch, name: str) -> None:
    (fast, fast_warned), (numpy, numpy_warned) = read_both(monkeypatch, REPO / "sample_pcaps" / name)
    pd.testing.assert_frame_equal(fast, numpy)
    assert fast.attrs == numpy.attrs and fast_warned == numpy_warned
    assert len(fast) > 0


@pytest.mark.parametrize("name", EDGE)
def test_edge_captures_read_alike(monkeypatch, name: str) -> None:
    """Every committed edge capture (pcap of both byte orders and resolutions, cut short, absurd lengths,
    gzip, pcapng, other link types): the same records and the same table, the same damage warnings."""
    path = HERE / "data" / "edge" / name
    both = read_both(monkeypatch, path, read_records)
    assert_same_reading(both)
    if isinstance(both[0][0], analyzer.CaptureError):
        return
    (table, _), (numpy_table, _) = read_both(monkeypatch, path)
    pd.testing.assert_frame_equal(table, numpy_table)
    assert table.attrs == numpy_table.attrs


@pytest.mark.parametrize("name", [n for n in SAMPLES if n.endswith(".pcap")])
def test_samples_as_wiresharks_pcapng(monkeypatch, tmp_path: Path, name: str) -> None:
    """Each sample rewritten as pcapng by Wireshark's own writer (`editcap -F pcapng`: section and interface
    options, enhanced packet blocks): read both ways, the same table as the pcap's (but the format)."""
    import shutil
    import subprocess

    assert shutil.which("editcap"), "editcap missing: .ci/setup installs tshark, which brings it"
    path = tmp_path / (name + "ng")
    subprocess.run(["editcap", "-F", "pcapng", str(REPO / "sample_pcaps" / name), str(path)], check=True,
                   capture_output=True, timeout=60)
    assert path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    (fast, fast_warned), (numpy, numpy_warned) = read_both(monkeypatch, path)
    pd.testing.assert_frame_equal(fast, numpy)
    assert fast_warned == numpy_warned == []
    pcap = read(str(REPO / "sample_pcaps" / name))
    pd.testing.assert_frame_equal(fast, pcap)
    assert fast.attrs["format"] == "pcapng" and pcap.attrs["format"] == "pcap"


def random_chain(rng: np.random.Generator, big: bool, nano: bool) -> bytes:
    """A classic pcap of random records: any timestamps, caplen from 0 up, now and then an absurd length, a
    record cut short by the end of the file, or a partial header at its end."""
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, int(rng.choice([0, 96, 65535, 262144])), 1)]
    for _ in range(int(rng.integers(0, 400))):
        cap = int(rng.choice([0, 1, 14, 54, 60, 74, 1514, int(rng.integers(0, 3000))]))
        if rng.random() < 0.005:
            cap = int(rng.choice([300_000, 1 << 21, 2**32 - 1]))
        body = rng.integers(0, 256, min(cap, 3000), dtype=np.uint8).tobytes()
        sec, frac = int(rng.integers(0, 2**32)), int(rng.integers(0, 10**9 if nano else 10**6))
        out.append(struct.pack(e + "IIII", sec, frac, cap, int(rng.integers(0, 2**32))) + body)
    return cut_maybe(rng, b"".join(out), 24)


@pytest.mark.parametrize("seed", range(40))
def test_random_record_chains_walk_alike(monkeypatch, tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path = tmp_path / "chain.pcap"
    path.write_bytes(random_chain(rng, big=bool(seed & 1), nano=bool(seed & 2)))
    assert_same_reading(read_both(monkeypatch, path, read_records))


def random_pcapng(rng: np.random.Generator) -> bytes:
    """A pcapng of random blocks: sections of either byte order, interfaces with random timestamp resolutions
    and offsets, runs of enhanced packet blocks (now and then one naming an interface not yet described, or with
    a caplen that does not fit), simple and obsolete packet blocks, blocks of other types, blocks too short for
    their fields or of absurd length, and a cut at the end."""
    out = []
    e = "<"
    for i in range(int(rng.integers(2, 80))):
        kinds = ["shb", "idb", "epb", "spb", "opb", "other", "short"]
        kind = kinds[i] if i < 2 else rng.choice(kinds, p=[0.03, 0.06, 0.65, 0.08, 0.08, 0.08, 0.02])
        if kind == "shb":
            e = "<" if rng.random() < 0.5 else ">"
            body = struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)
            btype = 0x0A0D0D0A
        elif kind == "idb":
            options = b""
            if rng.random() < 0.5:
                options += struct.pack(e + "HHB3x", 9, 1, int(rng.choice([3, 6, 9, 0x80 | 20])))
            if rng.random() < 0.3:
                options += struct.pack(e + "HHq", 14, 8, int(rng.integers(-5, 5)))
            body = struct.pack(e + "HHI", int(rng.choice([1, 1, 101, 113])), 0, 65535) + options
            btype = 1
        elif kind in ("epb", "opb", "spb"):
            data = rng.integers(0, 256, int(rng.integers(0, 120)), dtype=np.uint8).tobytes()
            cap = len(data) if rng.random() < 0.98 else len(data) + int(rng.integers(1, 9))
            iface = 0 if rng.random() < 0.97 else int(rng.integers(0, 3))
            hi, lo = int(rng.integers(0, 2**20)), int(rng.integers(0, 2**32))
            pad = data + bytes(-len(data) % 4)
            if kind == "epb":
                body, btype = struct.pack(e + "IIIII", iface, hi, lo, cap, len(data) + 4) + pad, 6
            elif kind == "opb":
                body, btype = struct.pack(e + "HHIIII", iface, 0, hi, lo, cap, len(data)) + pad, 2
            else:
                body, btype = struct.pack(e + "I", len(data)) + pad, 3
        elif kind == "other":
            body, btype = bytes(4 * int(rng.integers(0, 5))), int(rng.choice([4, 5, 0xBAD, 0x80000001]))
        else:  # too short for its fields
            body, btype = bytes(4 * int(rng.integers(0, 5))), int(rng.choice([1, 2, 3, 6]))
        length = 12 + len(body)
        if rng.random() < 0.005:
            length = int(rng.choice([8, 13, 1 << 21]))
        out.append(struct.pack(e + "II", btype, length) + body + struct.pack(e + "I", length))
    return cut_maybe(rng, b"".join(out), 0)


@pytest.mark.parametrize("seed", range(60))
def test_random_pcapng_walk_alike(monkeypatch, tmp_path: Path, seed: int) -> None:
    """Random pcapng block sequences: the compiled runs of enhanced packet blocks and the block loop alone read
    the same records and stop at the same damage; nothing but CaptureError is ever raised."""
    rng = np.random.default_rng(1000 + seed)
    path = tmp_path / "blocks.pcapng"
    path.write_bytes(random_pcapng(rng))
    assert_same_reading(read_both(monkeypatch, path, read_records))


def test_pcapng_block_too_short_for_its_fields(tmp_path: Path) -> None:
    """An enhanced packet block of 28 bytes (its fixed fields need 32): a one-line warning naming the block,
    the packets before it kept, exit 0 (it used to end in a struct.error traceback)."""
    import subprocess
    import sys

    shb = struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    idb = struct.pack("<IIHHII", 1, 20, 1, 0, 65535, 20)
    good = struct.pack("<IIIIIII", 6, 36, 0, 0, 1, 4, 4) + b"\xff" * 4 + struct.pack("<I", 36)
    short = struct.pack("<II", 6, 28) + bytes(16) + struct.pack("<I", 28)
    path = tmp_path / "short.pcapng"
    path.write_bytes(shb + idb + good + short)
    r = subprocess.run([sys.executable, "-m", "analyzer", "rtt", str(path)], check=False, capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"synlens: warning: {path}: block at byte 84 (type 6) is too short for its fields (28 bytes); read 1 packets"]


@pytest.mark.parametrize("form", ["pcap", "pcapng"])
def test_many_tiny_records(monkeypatch, tmp_path: Path, form: str) -> None:
    """20,000 records of 0 to 3 bytes: more than the compiled walks' first guess of the record count (a record per
    64 bytes of file), so their arrays grow, keeping every record in order."""
    rng = np.random.default_rng(3)
    sizes = rng.integers(0, 4, 20_000)
    if form == "pcap":
        head = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
        body = [struct.pack("<IIII", 7, i, n, n) + bytes(int(n)) for i, n in enumerate(sizes)]
    else:
        head = (struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
                + struct.pack("<IIHHII", 1, 20, 1, 0, 65535, 20))
        body = [struct.pack("<IIIIIII", 6, 32 + 4 * (n > 0), 0, 0, i, n, n) + bytes(4 * (n > 0))
                + struct.pack("<I", 32 + 4 * (n > 0)) for i, n in enumerate(sizes)]
    path = tmp_path / f"tiny.{form}"
    path.write_bytes(head + b"".join(body))
    both = read_both(monkeypatch, path, read_records)
    assert_same_reading(both)
    (records, warned), _ = both
    assert not warned and len(records) == 20_000 and (records.caplen == sizes).all()


def test_pcapng_interfaces_past_16_bits(monkeypatch, tmp_path: Path) -> None:
    """Interface ids are 16-bit in the table (and in pcapng's obsolete packet block): sections that together
    describe more than 65,536 interfaces stop at the one past that, with a warning, both ways (the block loop
    raised OverflowError once ids passed 65,535; the compiled walk would have wrapped them)."""
    shb = struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    idb = struct.pack("<IIHHII", 1, 20, 1, 0, 65535, 20)
    epb = struct.pack("<IIIIIII", 6, 36, 0, 0, 1, 4, 4) + b"\xff" * 4 + struct.pack("<I", 36)
    path = tmp_path / "interfaces.pcapng"
    path.write_bytes((shb + idb * 30_000 + epb) * 3)
    both = read_both(monkeypatch, path, read_records)
    assert_same_reading(both)
    (records, warned), _ = both
    assert len(records) == 2 and list(records.iface) == [0, 30_000]  # interface 0 of the first two sections
    at = 28 + 2 * (30_000 * 20 + 36 + 28) + 5_536 * 20  # two whole sections, then 5,536 interfaces of the third
    assert warned == [f"{path}: interface description at byte {at} is the 65,537th; stopping there; read 2 packets"]


def test_walk_in_several_calls(monkeypatch, tmp_path: Path) -> None:
    """The compiled walk fills arrays of a bounded size per call: a capture of many more records than that
    is walked in several calls, the records joined in order, the damage found in a later call."""
    import analyzer.accel.walk

    rng = np.random.default_rng(5)
    records = [struct.pack("<IIII", i, 7 * i, n, n + 1) + bytes(n) for i, n in enumerate(rng.integers(0, 200, 60))]
    path = tmp_path / "long.pcap"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1) + b"".join(records)
                     + struct.pack("<IIII", 1, 2, 1 << 22, 0))  # an absurd record at the very end
    monkeypatch.setattr(analyzer.accel.walk, "_COMPILED_RECORDS", 7)
    (fast, fast_warned), (numpy, numpy_warned) = read_both(monkeypatch, path, read_records)
    assert len(fast) == 60
    assert_same_records(fast, numpy)
    assert fast_warned == numpy_warned and "claims 4194304 bytes" in fast_warned[0]


def test_bad_arguments_raise() -> None:
    """The compiled functions check what they are given (they write into caller's arrays by position)."""
    fast = analyzer.accel.COMPILED.reader
    out = [np.empty(4, np.int64) for _ in range(4)]
    with pytest.raises(ValueError, match="walk_pcap output"):
        fast.walk_pcap(b"\0" * 64, 24, False, False, 65535, out[0], out[1], out[2], np.empty(4, np.int32))
    with pytest.raises(BufferError):
        fast.walk_pcap(b"\0" * 64, 24, False, False, 65535, out[0], out[1], out[2], out[3].tobytes())  # read-only
    rows = np.array([0, 5], np.int64)
    values = np.zeros(3, np.uint16)
    columns = tuple([values, None] + [None, None] * 20)
    u32, hit = np.empty(2, np.uint32), np.empty(2, np.uint8)
    with pytest.raises(IndexError, match="row outside"):
        fast.tcp4(b"\0" * 200, np.array([0, 60], np.int64), np.array([60, 60], np.int64), rows, columns, 1, u32, u32,
                  hit)
    with pytest.raises(ValueError, match="columns"):
        fast.tcp4(b"\0" * 200, rows, rows, rows, columns[:-2], 1, u32, u32, hit)
    with pytest.raises(ValueError, match="tcp4 caplen"):
        fast.tcp4(b"\0" * 200, rows, rows[:1], rows, columns, 1, u32, u32, hit)


def test_columns_no_record_holds_take_no_memory(monkeypatch, tmp_path: Path) -> None:
    """SYNs without TCP options, read both ways: the option columns are absent everywhere and, as the numpy path
    leaves them, one value repeated (no array of a row each: the compiled pass makes a column only once a record
    has a value for it)."""
    from test_edge_captures import gen, write_pcap

    frames = [gen.ethernet(gen.ipv4("10.0.0.9", "10.0.0.2", gen.tcp(40000 + i, 80, 0x02, i)),
                           0x020000000009, 0x020000000002).data for i in range(50)]
    path = tmp_path / "bare.pcap"
    write_pcap(path, frames)
    (fast, _), (numpy, _) = read_both(monkeypatch, path)
    pd.testing.assert_frame_equal(fast, numpy)
    for table in (fast, numpy):
        for name in ("tcp_options", "mss", "wscale", "tsval", "tsecr"):
            assert table[name].isna().all() and table[name].array._data.strides == (0,), name
        assert table["seq"].notna().all() and table["seq"].array._data.strides != (0,)


def _sort_cases() -> list[tuple[str, np.ndarray]]:
    """Keys as the analyzer packs them and worse: full 64-bit, few bits at the top, bottom or middle, duplicates,
    one value, sorted and reversed runs, a heavy bucket; sizes around the sort's insertion and buffer limits."""
    rng = np.random.default_rng(7)
    u64 = np.uint64
    cases = [("empty", np.zeros(0, u64)), ("one", np.array([5], u64)), ("two", np.array([2**64 - 1, 0], u64))]
    for n in (47, 48, 49, 1000, 65_535, 65_536, 65_537, 300_000):
        cases += [
            (f"random64 {n}", rng.integers(0, 2**64, n, dtype=u64)),
            (f"top bits {n}", rng.integers(0, 8, n, dtype=u64) << u64(61)),
            (f"low bits {n}", rng.integers(0, 300, n, dtype=u64)),
            (f"middle bits {n}", rng.integers(0, 2**20, n, dtype=u64) << u64(23) | u64(0x8000_0000_0000_0001)),
            (f"key and rank {n}", rng.integers(0, 2**24, n, dtype=u64) << u64(21) | np.arange(n, dtype=u64)),
            (f"one value {n}", np.full(n, 0xDEAD_BEEF, u64)),
            (f"sorted {n}", np.arange(n, dtype=u64) * u64(3)),
            (f"reversed {n}", np.arange(n, dtype=u64)[::-1].copy()),
            (f"heavy bucket {n}", np.where(rng.random(n) < 0.9, u64(7) << u64(56) | rng.integers(0, 4, n, dtype=u64),
                                           rng.integers(0, 2**64, n, dtype=u64))),
        ]
    return cases


@pytest.mark.parametrize("name, keys", _sort_cases(), ids=[name for name, _ in _sort_cases()])
def test_radix_sort_sorts_like_numpy(name: str, keys: np.ndarray) -> None:
    from analyzer.accel.order import sort_words

    expected = np.sort(keys)
    got = keys.copy()
    analyzer.accel.COMPILED.sort.sort_u64(got)
    np.testing.assert_array_equal(got, expected)
    got = keys.copy()
    sort_words(got)
    np.testing.assert_array_equal(got, expected)


def test_radix_sort_random_small_arrays() -> None:
    """Thousands of short arrays of random widths and shifts (every digit position the sort may start from)."""
    rng = np.random.default_rng(11)
    for _ in range(3000):
        bits = int(rng.integers(1, 65))
        keys = rng.integers(0, 2**bits, int(rng.integers(0, 500)), dtype=np.uint64) << np.uint64(
            int(rng.integers(0, 65 - bits)))
        got = keys.copy()
        analyzer.accel.COMPILED.sort.sort_u64(got)
        np.testing.assert_array_equal(got, np.sort(keys))


def test_radix_sort_refuses_other_arrays() -> None:
    """Only writable, contiguous unsigned 64-bit integers; sort_words gives numpy's sort the others."""
    from analyzer.accel.order import sort_words

    fast = analyzer.accel.COMPILED.sort
    for bad in (np.array([3, -1], np.int64), np.array([2.0, 1.0]), np.array([2, 1], np.uint32)):
        with pytest.raises(ValueError, match="unsigned 64-bit"):
            fast.sort_u64(bad)
    with pytest.raises(BufferError):
        fast.sort_u64(np.array([2, 1], np.uint64).tobytes())  # read-only
    with pytest.raises(ValueError, match="contiguous"):
        fast.sort_u64(np.arange(10, dtype=np.uint64)[::-2])
    strided = np.arange(10, dtype=np.uint64)[::-1][::2]
    sort_words(strided)
    np.testing.assert_array_equal(strided, [1, 3, 5, 7, 9])


@pytest.mark.parametrize("name", SAMPLES)
def test_samples_analyzed_alike(monkeypatch, name: str) -> None:
    """Matching, families with every signal, scans and hosts (which sort packed keys with the compiled radix
    sort) give the same tables with the compiled code and with numpy's."""
    results = []
    for fast in (analyzer.accel.COMPILED, analyzer.accel.NONE):
        with monkeypatch.context() as m, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.setattr(analyzer.accel, "COMPILED", fast)
            packets = read(str(REPO / "sample_pcaps" / name))
            probes = analyzer.match(packets)
            ports, fams = analyzer.signal_families(packets, probes)
            found, states = analyzer.scans(packets, probes)
            results.append((probes, ports, fams, found, states, analyzer.hosts(packets, probes, states, found)))
    for a, b in zip(*results):
        pd.testing.assert_frame_equal(a, b)
    assert len(results[0][0]) > 0


def _key_order_both(monkeypatch, words: list[np.ndarray], used: int, when: np.ndarray) -> tuple[tuple, tuple]:
    """accel.order.key_time_order's (order, same key as before) with the compiled pass and with numpy's."""
    from analyzer.accel.order import key_time_order

    out = []
    for fast in (analyzer.accel.COMPILED, analyzer.accel.NONE):
        with monkeypatch.context() as m:
            m.setattr(analyzer.accel, "COMPILED", fast)
            out.append(key_time_order([w.copy() for w in words], used, [when.copy()]))
    return out[0], out[1]


@pytest.mark.parametrize("seed", range(12))
def test_key_order_orders_like_numpy(monkeypatch, seed: int) -> None:
    """Entries by (key, time rank), exact (one word beside the rank) or hashed (wider keys), with keys repeated
    and ranks with gaps: the same order and the same key runs both ways, and the runs are the keys'."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40_000))
    n_words, bits = [(1, 20), (1, 50), (2, 64), (3, 64)][seed % 4]
    distinct = rng.integers(0, 2**min(bits, 63), (max(n // 3, 1), n_words), dtype=np.uint64)
    keys = distinct[rng.integers(0, len(distinct), n)]
    words = [np.ascontiguousarray(keys[:, k]) for k in range(n_words)]
    used = int(words[-1].max()).bit_length()  # (the bits the last word uses)
    when = rng.permutation(n * 3)[:n].astype(np.uint32 if seed % 2 else np.int64)
    (o_c, same_c), (o_n, same_n) = _key_order_both(monkeypatch, words, used, when)
    np.testing.assert_array_equal(o_c, o_n)
    np.testing.assert_array_equal(same_c, same_n)
    ordered = [w[o_c] for w in words]
    equal_prev = np.r_[False, np.logical_and.reduce([w[1:] == w[:-1] for w in ordered])]
    np.testing.assert_array_equal(same_c, equal_prev)
    run = np.cumsum(~same_c)
    assert (np.diff(when[o_c])[np.diff(run) == 0] > 0).all()  # time order within each key


def test_key_order_leaves_collisions_and_wide_ranks_to_numpy(monkeypatch) -> None:
    """Keeping 8 bits of hash, 30,000 keys of two words share hashes: the compiled pass says so (status 1) and
    the entries are ordered by numpy, exactly as they are without the compiled pass; ranks of 41 bits leave
    fewer than 24 bits for a hash (status 2)."""
    import analyzer.accel.order
    from analyzer.accel.order import _exact_order

    rng = np.random.default_rng(5)
    n = 30_000
    words = [rng.integers(0, 2**64, n, dtype=np.uint64) for _ in range(2)]
    words[0][n // 2:] = words[0][:n // 2]  # (half the keys twice: runs of two)
    words[1][n // 2:] = words[1][:n // 2]
    when = rng.permutation(n).astype(np.int64)
    o, same = np.empty(n, np.int32), np.empty(n, np.uint8)
    assert analyzer.accel.COMPILED.sort.key_order(tuple(words), when, 64, o, same, 8) == 1
    assert analyzer.accel.COMPILED.sort.key_order(tuple(words), np.array([2**41 - 1], np.int64), 64, o, same) == 2
    monkeypatch.setattr(analyzer.accel.order, "KEY_HASH_BITS", 8)
    (o_c, same_c), (o_n, same_n) = _key_order_both(monkeypatch, words, 64, when)
    np.testing.assert_array_equal(o_c, o_n)
    np.testing.assert_array_equal(same_c, same_n)
    _, same_x = _exact_order([w.copy() for w in words], when)

    def run_lengths(same: np.ndarray) -> list[int]:
        return sorted(np.bincount(np.cumsum(~same)).tolist())

    assert run_lengths(same_c) == run_lengths(same_x) and same_c.sum() == n // 2  # each repeated key: one run of 2


def test_key_order_refuses_bad_arguments() -> None:
    fast = analyzer.accel.COMPILED.sort
    words = (np.arange(4, dtype=np.uint64),)
    o, same = np.empty(4, np.int32), np.empty(4, np.uint8)
    with pytest.raises(ValueError, match="key_order word"):
        fast.key_order((np.arange(3, dtype=np.uint64),), np.arange(4, dtype=np.int64), 2, o, same)
    with pytest.raises(ValueError, match="ranks"):
        fast.key_order(words, np.arange(4, dtype=np.int16), 2, o, same)
    with pytest.raises(ValueError, match="ranks or entries"):
        fast.key_order(words, np.array([0, 1, 2, -1], np.int64), 2, o, same)
    with pytest.raises(ValueError, match="between 1 and"):
        fast.key_order((), np.arange(4, dtype=np.int64), 2, o, same)


@pytest.mark.parametrize("seed", range(8))
def test_latest_in_runs_pairs_like_a_plain_loop(monkeypatch, seed: int) -> None:
    """accel.order.latest_in_runs, compiled and numpy, on entries in (key, time) order: for each reply, the last transmission before
    it in its key's run, as a plain loop finds it; replies with none (first in their run, or after only replies)
    are left out."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5000))
    n_ev = int(rng.integers(0, n + 1))
    o = rng.permutation(n).astype(np.int32 if seed % 2 else np.int64)
    same = (rng.random(n) < 0.7).astype(np.uint8)
    same[0] = 0
    want, last = [], -1
    for i, e in enumerate(o.tolist()):
        last = -1 if not same[i] else last
        if e < n_ev:
            last = e
        elif last >= 0:
            want.append((e - n_ev, last))
    reply, tx = np.empty(n - n_ev, np.int64), np.empty(n - n_ev, np.int64)
    count = analyzer.accel.COMPILED.sort.latest_in_runs(o, same, n_ev, reply, tx)
    assert list(zip(reply[:count].tolist(), tx[:count].tolist())) == want
    for fast in (analyzer.accel.COMPILED, analyzer.accel.NONE):
        monkeypatch.setattr(analyzer.accel, "COMPILED", fast)
        reply, tx = latest_in_runs(o, same.view(bool), n_ev)
        assert list(zip(reply.tolist(), tx.tolist())) == want


def test_latest_in_runs_refuses_bad_arguments() -> None:
    fast = analyzer.accel.COMPILED.sort
    o, same = np.array([2, 0, 1], np.int64), np.array([0, 1, 1], np.uint8)
    out = np.empty(3, np.int64)
    with pytest.raises(ValueError, match="not an order"):
        fast.latest_in_runs(np.array([0, 5, 1], np.int64), same, 1, out, out.copy())
    with pytest.raises(ValueError, match="n_ev outside"):
        fast.latest_in_runs(o, same, 4, out, out.copy())
    with pytest.raises(ValueError, match="latest_in_runs reply"):
        fast.latest_in_runs(o, same, 0, np.empty(2, np.int64), out)
    with pytest.raises(ValueError, match="int32 or int64"):
        fast.latest_in_runs(o.astype(np.int16), same, 0, out, out.copy())


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64])
@pytest.mark.parametrize("with_keep", [False, True])
def test_pack_into_packs_like_numpy(monkeypatch, dtype, with_keep: bool) -> None:
    """accel.keys.pack_into compiled (_sort.c) and by numpy: the same words, and (replies' side) the same
    rows kept, values outside [lo, hi] dropped with their bits 0."""
    from analyzer.accel.keys import pack_into

    rng = np.random.default_rng(int(np.dtype(dtype).itemsize) + 10 * with_keep)
    info = np.iinfo(dtype)
    n = 3000
    values = rng.integers(max(info.min, -(2**40)), min(info.max, 2**40) + 1, n).astype(dtype)
    lo, hi = (int(np.percentile(values, 10)), int(np.percentile(values, 90))) if with_keep else (
        int(values.min()), int(values.max()))
    bits = (hi - lo).bit_length()
    start = rng.integers(0, 2**20, n, dtype=np.uint64)
    keep0 = rng.random(n) < 0.9
    out = []
    for fast in (analyzer.accel.COMPILED, analyzer.accel.NONE):
        monkeypatch.setattr(analyzer.accel, "COMPILED", fast)
        word, keep = start.copy(), keep0.copy() if with_keep else None
        pack_into(word, values, lo, hi, bits, keep)
        out.append((word, keep))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    if with_keep:
        np.testing.assert_array_equal(out[0][1], out[1][1])
        assert 0 < out[0][1].sum() < keep0.sum()  # (some values outside: dropped)


def test_pack_into_refuses_bad_arguments() -> None:
    fast = analyzer.accel.COMPILED.sort
    word = np.zeros(4, np.uint64)
    with pytest.raises(ValueError, match="fit the bits"):
        fast.pack_into(word, np.arange(4, dtype=np.int64), 0, 300, 8, None)
    with pytest.raises(ValueError, match="unsigned of up to 32 bits"):
        fast.pack_into(word, np.arange(4, dtype=np.uint64), 0, 3, 2, None)
    with pytest.raises(ValueError, match="pack_into keep"):
        fast.pack_into(word, np.arange(4, dtype=np.int64), 0, 3, 2, np.ones(2, np.uint8))
