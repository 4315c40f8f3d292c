"""Probes past the memory budget, on disk by target (analysis/buckets.py): each bucket holds exactly its targets'
probes and the replies they read, in the whole's order; what is held in memory stays within the budget and one
part; the buckets' families and signals, put back in order, are the whole's; and the command line prints, byte
for byte, what it prints with everything in memory.

On real captures: a sweep of 5,000 targets (zmap), nmap's scans of a few machines, and the spam bot's
ordinary traffic (hundreds of peers)."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import realworld
from test_sources import run

from analyzer.analysis.buckets import Buckets, in_target_order, target_buckets
from analyzer.analysis.chunked import ChunkedMatch, joined
from analyzer.analysis.signals import REPLY_FIELDS
from analyzer.analysis.stats import PROBE_FIELDS
from analyzer.pipeline import Options, analyze
from analyzer.reading.filters import EVERYTHING
from analyzer.reading.merge import in_frame_order
from analyzer.reading.sources import captures
from analyzer.reading.stream import Stream, packet_chunks

CAPTURES = ["ProbingDataset__zmap_tcp_5k.pcapng", "hw13-01__nmap.pcapng", "Alienvault-Demo__spambot.pcap"]


def parts_of(path: Path, records: int = 1000) -> tuple[list, ChunkedMatch]:
    """The (probes, replies) parts a chunked match of the capture gives out, with the replies signals read."""
    found = captures([str(path)])
    m = ChunkedMatch(window_s=0.05, columns=(*PROBE_FIELDS, "probe_frame"), reply_columns=REPLY_FIELDS, rows=records)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the spam bot's capture is cut short: said elsewhere)
        chunks = packet_chunks(found.files, list(m.packet_columns()), EVERYTHING, 0, records, Stream.of(found.files))
        return list(m.parts(chunks)), m


@pytest.mark.parametrize("name", CAPTURES)
def test_each_bucket_holds_its_targets_probes_and_their_replies_in_the_wholes_order(name: str) -> None:
    parts, m = parts_of(realworld(name))
    assert len(parts) >= 2  # (a capture cut into parts: their order within a bucket is kept)
    whole = joined([p.copy() for p, _ in parts], m)
    replies = in_frame_order([r for _, r in parts])
    with Buckets(budget=0, n=8) as kept:
        for part in parts:
            kept.add(part)
        assert kept.spilled and not kept.held
        buckets = [(joined([p for p, _ in b], m), in_frame_order([r for _, r in b])) for b in kept.buckets()]
    assert len(buckets) > 1
    targets = [set(p["dst"].astype(str)) for p, _ in buckets]
    assert sum(map(len, targets)) == len(set().union(*targets)) == whole["dst"].nunique()  # a target in one bucket
    assert sum(len(p) for p, _ in buckets) == len(whole)
    order = pd.Series(np.arange(len(whole)), index=whole["probe_frame"].to_numpy())
    for (probes, answers), mine in zip(buckets, targets):
        expected = whole[whole["dst"].astype(str).isin(mine)].reset_index(drop=True)
        assert (np.diff(order[probes["probe_frame"].to_numpy()].to_numpy()) > 0).all()  # the whole's order
        pd.testing.assert_frame_equal(probes[["probe_frame", "rtt_ns", "reply_frame"]],
                                      expected[["probe_frame", "rtt_ns", "reply_frame"]])
        assert {str(b) for b in target_buckets(probes["dst"], 8)} == {str(target_buckets(probes["dst"], 8)[0])}
        wanted = replies[replies["frame"].isin(expected["reply_frame"].dropna())].reset_index(drop=True)
        pd.testing.assert_frame_equal(answers, wanted)


def test_what_is_held_stays_within_the_budget_and_one_part() -> None:
    parts, _ = parts_of(realworld("Alienvault-Demo__spambot.pcap"), records=200)
    sizes = [sum(int(t.memory_usage(index=False, deep=True).sum()) for t in part) for part in parts]
    budget = 3 * max(sizes)
    assert sum(sizes) > 3 * budget  # (the capture's parts do not fit the budget)
    with Buckets(budget=budget, n=16) as kept:
        for part, size in zip(parts, sizes):
            kept.add(part)
            held = sum(sum(int(t.memory_usage(index=False, deep=True).sum()) for t in p if t is not None)
                       for p in kept.held)
            assert held == kept.held_bytes <= (budget // 4 if kept.spilled else budget) + size
        assert kept.spilled
        assert sum(len(p) for b in kept.buckets() for p, _ in b) == sum(len(p) for p, _ in parts)


def test_within_the_budget_nothing_is_dealt() -> None:
    parts, _ = parts_of(realworld("hw13-01__nmap.pcapng"))
    with Buckets(budget=1 << 40) as kept:
        for part in parts:
            kept.add(part)
        assert not kept.spilled
        assert all(a is b for (a, _), (b, _) in zip(kept.held, parts))


@pytest.mark.parametrize("name", CAPTURES)
def test_the_buckets_results_put_in_order_are_the_wholes(name: str) -> None:
    path = str(realworld(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = analyze(path, ("signals",), Options(chunk=0, window_s=0.05))
        dealt = analyze(path, ("signals",), Options(chunk=1000, window_s=0.05, buffer_size=0))
    assert len(whole.signals[0]) > 0
    for a, b in zip(whole.signals, dealt.signals):
        pd.testing.assert_frame_equal(a, b)
        assert a.attrs == b.attrs
    assert (whole.probes_matched, whole.unsolicited_replies, whole.notes) == (
        dealt.probes_matched, dealt.unsolicited_replies, dealt.notes)


def test_in_target_order_restores_the_order_of_targets_and_protocols() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fams = analyze(str(realworld("Alienvault-Demo__spambot.pcap")), ("families",)).families
    assert fams["target"].nunique() > 100
    rng = np.random.default_rng(7)
    bucket = rng.integers(0, 5, fams["target"].nunique())[pd.factorize(fams["target"])[0]]
    tables = [fams[bucket == b].reset_index(drop=True) for b in rng.permutation(5)]
    pd.testing.assert_frame_equal(in_target_order(tables), fams)


@pytest.mark.parametrize("name", CAPTURES)
def test_rtt_with_probes_on_disk_prints_what_rtt_in_memory_prints(name: str) -> None:
    capture = str(realworld(name))
    target = ("--target", "10.99.99.99")  # (absent: its note is said once, by both)
    for command in (("--signals", "all"), ("--signals", "rtt", "--probes", "any"), target):
        code, whole, err = run("rtt", capture, "--format", "json", "--window", "0.05", *command)
        code_dealt, dealt, err_dealt = run("rtt", capture, "--format", "json", "--window", "0.05", *command,
                                           "--chunk", "500", "--buffer-size", "0")
        assert code == code_dealt == 0, err_dealt
        assert (dealt, err_dealt) == (whole, err)
    assert "no probe to that address" in err


@pytest.mark.parametrize("signals, factor", [("all", 3.0), ("rtt", 4.0)])
def test_a_bucket_past_the_memory_allowed_is_one_line_before_it_is_read(signals: str, factor: float,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """hw13's probes dealt to disk (--buffer-size 0), by buckets of targets: the process holding 100 MB (as told
    here), a --max-memory of 100 MB stops the run in one line at its first bucket, naming it, before any bucket is
    analysed; 102 MB lets every bucket add `BUCKET_PEAK_FACTOR` times its bytes on disk (the largest is its one
    scanned target's, under 0.5 MB) and the run prints what it prints without a limit."""
    from analyzer import pipeline
    from analyzer.reading import memory

    assert memory.BUCKET_PEAK_FACTOR == {"signals": 3.0, "families": 4.0}
    told: list[int] = []
    monkeypatch.setattr(memory, "anonymous_memory", lambda: 100 << 20)
    original = memory.MemoryGuard.before_bucket
    monkeypatch.setattr(memory.MemoryGuard, "before_bucket",
                        lambda self, on_disk, steps: (told.append(on_disk), original(self, on_disk, steps))[1])
    analysed = pipeline.bucket_result
    monkeypatch.setattr(pipeline, "bucket_result", None)  # (a bucket analysed would call it)
    capture = str(realworld("hw13-01__nmap.pcapng"))
    argv = ("rtt", capture, "--signals", signals, "--chunk", "500", "--buffer-size", "0")
    code, out, err = run(*argv, "--max-memory", "100M")
    assert code == 2 and not out and err.count("\n") == 1, err
    assert len(told) == 1 and told[0] > 0
    peak = (100 << 20) + int(factor * told[0])
    assert err.startswith(f"synlens: error: {capture}: not enough memory to analyse it (rtt holds a target's probes "
                          f"together: about {memory.gigabytes(peak)} at the peak for these captures, for a bucket of "
                          f"targets of {memory.gigabytes(told[0])} on disk, --max-memory 100 MB; "), err
    monkeypatch.setattr(pipeline, "bucket_result", analysed)
    told.clear()
    code, out, err = run(*argv, "--max-memory", "102M")
    assert code == 0 and not err and len(told) > 1 and max(told) * factor < 2 << 20, err
    assert (code, out, err) == run(*argv)


@pytest.mark.parametrize("size, bytes_", [("0", 0), ("4096", 4096), ("64K", 64 << 10), ("256M", 256 << 20),
                                          ("2g", 2 << 30)])
def test_buffer_size_reads_sizes_as_sort_does(size: str, bytes_: int) -> None:
    from analyzer.cli import _options, build_parser

    args = build_parser().parse_args(["rtt", "x.pcap", "--buffer-size", size])
    assert _options(args).buffer_size == bytes_


@pytest.mark.parametrize("size", ["-1", "1T", "M", "lots"])
def test_a_buffer_size_that_is_no_size_is_said_in_one_line(size: str, capsys: pytest.CaptureFixture) -> None:
    from analyzer.cli import main

    with pytest.raises(SystemExit) as stopped:  # (argparse's usage error)
        main(["rtt", str(realworld("hw13-01__nmap.pcapng")), f"--buffer-size={size}"])
    out, err = capsys.readouterr()
    assert stopped.value.code == 2 and not out
    last = err.strip().splitlines()[-1]  # (argparse's usage, then its one line of error)
    assert last.startswith("synlens rtt: error: argument --buffer-size: ") and size in last
    assert "Traceback" not in err


def test_a_temporary_folder_that_cannot_be_written_is_said_in_one_line(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    absent = tmp_path / "absent"
    parts, _ = parts_of(realworld("hw13-01__nmap.pcapng"))
    with Buckets(budget=0, directory=str(absent)) as kept, pytest.raises(OSError) as failed:
        kept.add(parts[0])
    assert failed.value.filename == str(absent) and "--buffer-size" in failed.value.strerror
    monkeypatch.setattr(tempfile, "tempdir", str(absent))  # (as TMPDIR naming it would, were it there)
    code, out, err = run("rtt", str(realworld("hw13-01__nmap.pcapng")), "--chunk", "1000", "--buffer-size", "0")
    assert code == 2 and not out
    assert err.startswith(f"synlens: error: {absent}: No such file or directory (temporary files: ")
    assert err.count("\n") == 1 and "Traceback" not in err
