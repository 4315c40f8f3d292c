"""The fuzzer's seed corpus: the samples, the hand-built edge captures, and the third-party real captures, each
trimmed to its first records so that a case is quick to read and analyse."""

from __future__ import annotations

import gzip
from pathlib import Path

from . import formats

REPO = Path(__file__).resolve().parents[2]
SEED_DIRS = (REPO / "sample_pcaps", REPO / "tests" / "data" / "edge", REPO.parent / "shared" / "realworld")
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".gz", ".cap", ".txt")
TRIM_RECORDS = 200  # records (pcap) or packet blocks (pcapng) kept of each seed


def trimmed(data: bytes, records: int = TRIM_RECORDS) -> bytes:
    """The capture's first `records` packets with everything before them (headers, interface descriptions);
    a gzip'd capture decompressed first; anything else as it is."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return data
    cap = formats.parse(data)
    if isinstance(cap, formats.Pcap):
        cap.records, cap.tail = cap.records[:records], b""
        return cap.bytes()
    if isinstance(cap, formats.Pcapng):
        packets = [i for i, b in enumerate(cap.blocks) if b.btype in (formats.EPB, formats.SPB, formats.OPB)]
        if len(packets) > records:
            cap.blocks = cap.blocks[: packets[records]]
        cap.tail = b""
        return cap.bytes()
    return data


def corpus(dirs: tuple[Path, ...] = SEED_DIRS, records: int = TRIM_RECORDS) -> list[tuple[str, bytes]]:
    """(name, trimmed bytes) of every capture in the seed folders that exist, sorted by name (the case
    sequence of a fixed seed depends on this order)."""
    out = []
    for d in dirs:
        if not d.is_dir():
            continue
        for path in sorted(d.iterdir()):
            if path.is_file() and path.name.endswith(CAPTURE_SUFFIXES):
                out.append((f"{d.name}/{path.name}", trimmed(path.read_bytes(), records)))
    return out
