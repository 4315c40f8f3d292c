"""Results → text for people (qscan's table), JSON and CSV for programs."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import orjson
import pandas as pd

from ..analysis.groups import group_ids, group_positions, unique_inverse
from ..protocols import address_order
from .frames import frame_list, frame_text, probe_and_reply, with_labels

RTT_COLUMNS = ["port", "protocol", "family", "family_kind", "sent", "received", "loss", "retransmissions",
               "samples", "mean_us", "stddev_us", "min_us", "median_us", "p95_us"]
# A sweep with more targets than this that answered nothing lists those in one block (scans: per phase).
SILENT_TARGETS_OVER = 10
SIGNAL_COLUMNS = ["rtt_family", "deciding_signal", "ttl", "ttl_agree", "window", "options", "rst", "ip_id_class",
                  "ts_offset", "ts_rate"]


# Big results stay compact: indenting 65,535 ports triples the output for no reader.
INDENT_UP_TO_ROWS = 2000


def _digits(column: str) -> int:
    """The decimals a float column is written with: epoch times to the µs, loss to 4 digits, other floats to 2."""
    return 6 if column in ("first", "last") else 4 if column == "loss" else 2


def _rounded(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The columns as output shows them (floats rounded to `_digits`)."""
    out = frame[columns].copy()
    for c in columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(_digits(c))
    return out


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Rows as dicts of plain Python values (None for missing), built column-wise, not row by row."""
    out = _rounded(frame, columns)
    lists = [out[c].to_numpy(dtype=object, na_value=None).tolist() for c in columns]
    return [dict(zip(columns, row)) for row in zip(*lists)]


# Rows made and written at a time in a big output (the text table, compact JSON): never whole in memory.
BLOCK_ROWS = 4096
# Where a big list of records goes in the document's skeleton (a NUL never occurs in JSON that orjson writes).
_MARK = b"\x00records\x00"
_DEFERRED = orjson.Fragment(_MARK)


def _json_values(column: pd.Series, digits: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes, texts): each row's value (floats rounded to `digits`) as a code into texts, the JSON text (bytes,
    as a numpy S array) of each distinct value, written by orjson as `_records` and `_dumps` would write it; code
    -1 (the last text) is null. Distinct values: integers by `keys.unique_inverse` (a port, a count: by
    counting), floats by their bits (-0.0 is not 0.0 in JSON) and other values by pandas' hash factorize; numbers
    are written in one orjson call (numbers hold no comma to split on)."""
    kind = column.dtype.kind  # (numpy's and pandas' numeric dtypes alike: i, u, f, b)
    spread = _spread_integers(column) if kind in "iu" else None
    if spread is not None:  # (frame numbers: nearly every value distinct, written digit by digit)
        return spread
    if kind in "iu" and not isinstance(column.array, pd.arrays.IntegerArray):  # (no missing value)
        uniques, codes = unique_inverse(column.to_numpy())
        uniques = uniques.tolist()
    elif kind == "f":
        floats = column.round(digits).to_numpy(np.float64, na_value=np.nan)
        codes, bits = pd.factorize(floats.view(np.int64))
        codes[np.isnan(floats)] = -1  # (NaN: null, as orjson writes it)
        uniques = bits.view(np.float64).tolist()
    else:
        codes, uniq = pd.factorize(column.array)
        uniques = np.asarray(uniq, dtype=object).tolist() if len(uniq) else []
        if any(isinstance(u, float) and u == 0.0 for u in uniques):  # (hashing takes -0.0 for 0.0: set apart)
            values = column.to_numpy(object)
            negative = np.fromiter((isinstance(v, float) and v == 0.0 and math.copysign(1.0, v) < 0 for v in values),
                                   bool, len(values))
            codes = np.where(negative, len(uniques), codes)
            uniques.append(-0.0)
    if kind in "iufb":
        texts = orjson.dumps(uniques)[1:-1].split(b",") if uniques else []
    else:
        texts = [orjson.dumps(u, option=orjson.OPT_SERIALIZE_NUMPY, default=str) for u in uniques]
    return codes, np.array(texts + [b"null"], dtype=bytes)


SPREAD_ROWS = 4096  # integer columns of at least this many rows, spread over at least as many values, are
# written digit by digit: coding them by distinct value would write nearly every row's own text anyway


def _spread_integers(column: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """`_json_values` for a column of non-negative integers spread over a range as wide as its length (frame
    numbers): codes 0..n-1 (-1: missing) into each row's decimal text, made by numpy a digit at a time,
    right-aligned behind NULs (the writer drops NULs). None for any other column."""
    n = len(column)
    if n < SPREAD_ROWS:
        return None
    values, absent = (column.array._data, column.array._mask) if isinstance(column.array, pd.arrays.IntegerArray) \
        else (column.to_numpy(), None)
    present = values if absent is None or not absent.any() else values[~absent]
    if not len(present) or present.min() < 0 or int(present.max()) - int(present.min()) < n:
        return None
    values = values.astype(np.uint64, copy=False)
    width = len(str(int(present.max())))
    digits = np.zeros((n, width), np.uint8)
    rest = values.copy()
    for place in range(width - 1, -1, -1):  # (least significant first, right to left)
        digits[:, place] = (rest % 10).astype(np.uint8) + ord("0")
        rest //= 10
    power = 10 ** np.arange(width - 1, 0, -1, dtype=np.uint64)  # (a leading zero is padding: NUL)
    digits[:, :-1][values[:, None] < power[None, :]] = 0
    texts = np.append(digits.view(f"S{width}").ravel(), np.array([b"null"], f"S{max(width, 4)}"))
    codes = np.arange(n, dtype=np.int64)
    if absent is not None and absent.any():
        codes[absent] = -1
    return codes, texts


def _records_json(frame: pd.DataFrame, columns: list[str]) -> Iterator[bytes]:
    """`_records` as compact JSON text, the same text orjson writes for them, for big outputs: no Python object
    per row. Each column's distinct values are written once (`_json_values`); then per block of rows, one record
    array of fixed-width byte fields (each key's text, then its value's, NUL-padded) is filled from a record
    holding the keys, a column's values at a time, and its bytes, without the padding, are the block's records."""
    coded = [_json_values(frame[c], _digits(c)) for c in columns]
    keys = [np.bytes_((b"{" if i == 0 else b",") + orjson.dumps(name) + b":") for i, name in enumerate(columns)]
    record = np.dtype([field for i, (key, (_, texts)) in enumerate(zip(keys, coded))
                       for field in ((f"k{i}", key.dtype), (f"v{i}", texts.dtype))] + [("end", "S2")])
    buffer = np.zeros(min(BLOCK_ROWS, len(frame)), record)  # (reused: each block's values overwrite the last's)
    for i, key in enumerate(keys):
        buffer[f"k{i}"] = key  # (the keys: the same in every record)
    buffer["end"] = b"},"
    yield b"["
    for a in range(0, len(frame), BLOCK_ROWS):
        block = buffer[:min(BLOCK_ROWS, len(frame) - a)]
        for i, (codes, texts) in enumerate(coded):
            block[f"v{i}"] = texts[codes[a:a + len(block)]]
        block["end"][-1] = b"}"  # (no comma after a block's last record: its NUL is dropped with the padding)
        if a:
            yield b","
        yield block.tobytes().translate(None, b"\x00")  # (the padding dropped)
    yield b"]"


def _streamed(document: object, deferred: list[tuple[pd.DataFrame, list[str]]], indent: bool) -> Iterator[bytes]:
    """A document's JSON text in pieces: its skeleton by orjson, with each `_DEFERRED` place (in document
    order) filled by the records of the matching `deferred` (frame, columns), encoded block by block."""
    skeleton = _dumps(document, indent)
    if not deferred:
        yield skeleton
        return
    pieces = skeleton.split(_MARK)
    for piece, (frame, columns) in zip(pieces, deferred):
        yield piece
        yield from _records_json(frame, columns)
    yield pieces[-1]


def _dumps(obj: object, indent: bool) -> bytes:
    """JSON text, UTF-8 encoded. orjson: ~10x the standard library's speed, and as fast indented as compact.
    Bytes, as orjson makes them: a big result (tens of MB for 65,535 ports) is not copied into a str and
    encoded back for the output."""
    option = orjson.OPT_SERIALIZE_NUMPY | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(obj, option=option, default=str)


def in_address_order(fams: pd.DataFrame) -> pd.DataFrame:
    """rtt's rows with the targets in address order (10.0.0.9 before 10.0.0.10; IPv4, then IPv6), each target's
    protocols in the order of their names, each (target, protocol)'s rows as they were (by port): what the table,
    the JSON and the CSV all list."""
    codes, names = pd.factorize(fams["target"])
    rank = np.empty(len(names), np.int64)
    rank[sorted(range(len(names)), key=lambda i: address_order(str(names[i])))] = np.arange(len(names))
    protocol = pd.factorize(fams["protocol"].astype(str), sort=True)[0]
    order = np.lexsort((protocol, rank[codes]))  # (stable: each group's rows keep their order)
    if (order == np.arange(len(order))).all():
        return fams
    out = fams.take(order).reset_index(drop=True)
    out.attrs = dict(fams.attrs)
    return out


def rtt_json(fams: pd.DataFrame, meta: dict[str, object], family_table: pd.DataFrame | None = None) -> bytes:
    """The rtt result as JSON (UTF-8): indented up to INDENT_UP_TO_ROWS ports, else compact."""
    return b"".join(rtt_json_pieces(fams, meta, family_table))


def rtt_json_pieces(fams: pd.DataFrame, meta: dict[str, object],
                    family_table: pd.DataFrame | None = None) -> Iterator[bytes]:
    """`rtt_json` in pieces, to be written one after the other: a big result is never whole in memory. Each
    target's rows and families are found once (a sweep has tens of thousands of targets); a target of many
    ports in a big result has its records written column-wise (`_DEFERRED`, `_records_json`), the others as dicts."""
    fams = in_address_order(fams)
    columns = RTT_COLUMNS + [c for c in SIGNAL_COLUMNS if c in fams.columns]
    medians = _median_of(fams)
    fams = fams.assign(**{key: fams[key].astype("Int64").where(fams[key] >= 0)  # -1: no family
                          for key in ("family", "rtt_family") if key in fams.columns})
    indent = len(fams) <= INDENT_UP_TO_ROWS
    names, positions = _target_rows(fams["target"])
    deferred_at = [not indent and len(p) >= DEFER_ROWS for p in positions]
    as_dicts = [p for p, d in zip(positions, deferred_at) if not d]
    records = iter(_records(fams.iloc[np.concatenate(as_dicts)], columns) if as_dicts else [])
    if family_table is not None:
        groups_of: dict[object, list[dict]] = {}
        unavailable: dict[object, list[str]] = {}
        for f in family_table.to_dict("records"):
            groups_of.setdefault(f["target"], []).append(
                {"family": int(f["family"]), "protocol": f["protocol"], "kind": f["kind"],
                 "ports": np.asarray(f["ports"], np.int64).tolist(),
                 "median_us": medians(f["target"], f["protocol"], f["family"], f["kind"]),
                 "signals": list(f["signals"]), "evidence": list(f["evidence"])})
            unavailable.setdefault(f["target"], list(f["unavailable"]))
    else:
        groups_of, unavailable = _rtt_groups(fams, medians), {}
    targets, deferred = [], []
    for target, rows, defer in zip(names, positions, deferred_at):
        if defer:
            ports = _DEFERRED
            deferred.append((fams.iloc[rows], columns))
        else:
            ports = [next(records) for _ in range(len(rows))]
        entry = {"address": target, "ports": ports, "families": groups_of.get(target, [])}
        if family_table is not None:
            entry["signals_unavailable"] = unavailable.get(target, [])
        targets.append(entry)
    return _streamed({**meta, "targets": targets}, deferred, indent=indent)


# In a big (compact) JSON, a target (rtt) or scan (scans) of at least this many ports has its records written
# column-wise (`_records_json`).
DEFER_ROWS = 1024
# In the rtt table, targets of at most this many ports have their cells' texts made all at once.
FEW_PORTS = 64


def _target_rows(target: pd.Series) -> tuple[list, list[np.ndarray]]:
    """Each target (in order of first appearance, as groupby(sort=False)) and the positions of its rows."""
    codes, names = pd.factorize(target)
    return list(names), group_positions(codes)


def _median_of(fams: pd.DataFrame) -> Callable[[object, object, object, str], float | None]:
    """(target, protocol, family, kind) → the family's RTT median in µs as output writes it (`family_medians`:
    the figure the text's evidence and the report give too); None for the "no answer" family."""
    from ..analysis.families import family_medians

    medians = family_medians(fams).round(_digits("median_us")).to_dict()

    def median(target: object, protocol: object, family: object, kind: str) -> float | None:
        value = medians.get((target, protocol, int(family))) if kind != "no answer" else None
        return None if value is None or np.isnan(value) else float(value)
    return median


def _rtt_groups(fams: pd.DataFrame, median: Callable[[object, object, object, str], float | None]
                ) -> dict[object, list[dict]]:
    """Without a family table: each target's RTT families (protocol, family order), its ports in row order."""
    answered = fams[fams["family"].notna()]
    out: dict[object, list[dict]] = {}
    grouped = answered.groupby(["target", "protocol", "family"], sort=True)
    kinds = grouped["family_kind"].first()
    ports_of = grouped["port"].agg(lambda p: p.astype(int).tolist())
    for (target, proto, fam), kind, ports in zip(kinds.index, kinds, ports_of.loc[kinds.index]):
        out.setdefault(target, []).append({"family": int(fam), "protocol": proto, "kind": kind, "ports": ports,
                                           "median_us": median(target, proto, fam, kind)})
    return out


def rtt_csv(fams: pd.DataFrame) -> str:
    return in_address_order(fams)[["target"] + RTT_COLUMNS].to_csv(index=False, float_format="%.3f")


Coded = tuple[np.ndarray, list[str]]  # a column's text: each row's code into its distinct texts (-1: the last)


def _coded(values: pd.Series, fmt: str = "{}") -> Coded:
    """Display text of a column, "-" where missing, as codes into the distinct texts: each distinct value is
    formatted once (families, TTLs, losses and signals are a few values over thousands of ports)."""
    codes, uniques = pd.factorize(values)  # (missing: code -1, the "-" after the uniques' texts)
    return codes, [fmt.format(v) for v in uniques.tolist()] + ["-"]


def _texts(coded: Coded) -> list[str]:
    """Each row's text."""
    codes, texts = coded
    return np.array(texts, dtype=object)[codes].tolist()


def _text(values: pd.Series, fmt: str = "{}") -> list[str]:
    return _texts(_coded(values, fmt))


def _fixed(values: pd.Series, digits: int = 2) -> Coded:
    return _coded(values.astype(float), "{:." + str(digits) + "f}")


def _lines(columns: list[Coded], widths: list[int]) -> list[str]:
    """Rows of left-aligned columns `widths` wide, two spaces apart, without trailing spaces (as the header's
    `"  ".join(f"{{:<{w}}}" ...).format(...).rstrip()`), made column-wise: each distinct text padded once, every
    row's bytes laid out as one record array (NUL padding where texts of one column differ in their UTF-8
    lengths, and after the last column, dropped with the newlines' split)."""
    fields = []
    for i, ((codes, texts), width) in enumerate(zip(columns, widths)):
        last = i == len(columns) - 1
        padded = np.array([(t if last else t.ljust(width) + "  ").encode() for t in texts], dtype=bytes)
        fields.append((padded, codes))
    record = np.dtype([(f"c{i}", padded.dtype) for i, (padded, _) in enumerate(fields)] + [("end", "S1")])
    rows = np.empty(len(fields[0][1]) if fields else 0, record)
    for i, (padded, codes) in enumerate(fields):
        rows[f"c{i}"] = padded[codes]
    rows["end"] = b"\n"
    return rows.tobytes().translate(None, b"\x00").decode().split("\n")[:-1]


def rtt_table(fams: pd.DataFrame, meta: dict[str, object], family_table: pd.DataFrame | None = None) -> str:
    """qscan's table (PORT FAMILY MEAN (us) STDDEV LOSS (%)) for each target, built column-wise."""
    return "\n".join(line for block in rtt_table_blocks(fams, meta, family_table) for line in block)


def capture_text(capture: object) -> str:
    """The capture as a text output's first line names it: its name, or how many files and the first and last."""
    if isinstance(capture, (list, tuple)):
        return f"{len(capture)} files, {capture[0]} … {capture[-1]}" if len(capture) > 2 else " and ".join(capture)
    return str(capture)


def rtt_table_blocks(fams: pd.DataFrame, meta: dict[str, object], family_table: pd.DataFrame | None = None,
                     silent_over: int = SILENT_TARGETS_OVER) -> Iterator[list[str]]:
    """`rtt_table`'s lines, a block at a time, to be written one block after the other: the columns' widths
    come from their widest values (not from every cell's text), so a big result's text is made and written
    BLOCK_ROWS rows at a time, never whole. More than `silent_over` targets that answered nothing (a sweep's)
    are one block at the end."""
    yield [(f"# {capture_text(meta['capture'])}: method {meta['method']}, confidence {meta['confidence']}, "
            f"{_counted(meta['probes_matched'], 'probe')} answered, "
            f"{_counted(meta['unsolicited_replies'], 'unsolicited reply', 'unsolicited replies')}")]
    fams = in_address_order(fams)
    signals = "deciding_signal" in fams.columns
    # Each target's rows of the family table, found once (not a filter of the whole table per target).
    evidence: dict[tuple, list[dict]] = {}
    for f in ([] if family_table is None else family_table.to_dict("records")):
        evidence.setdefault((f["target"], f["protocol"]), []).append(f)
    common = _common_notes(evidence)
    # A sweep's targets none of whose ports answered: one block at the end when there are many of them.
    silent = silent_rows(fams)
    fold = silent.any() and fams.loc[silent, ["target", "protocol"]].drop_duplicates().shape[0] > silent_over
    shown = fams[~silent] if fold else fams
    positions = group_positions(shown.groupby(["target", "protocol"], sort=False).ngroup().to_numpy())
    # Targets of a few ports (a sweep's answering hosts): every cell's text made once for all of them, each
    # target's widths from its own texts (as `_width` finds them from its values).
    few = [len(p) <= FEW_PORTS for p in positions]
    cells: list[list[str]] = []
    if any(few):
        small = shown.iloc[np.concatenate([p for p, f in zip(positions, few) if f])]
        few_header, columns, few_no_answer, few_untested = _rtt_columns(small, signals)
        cells = [text(slice(None)) for text, _ in columns]
    samples = shown["samples"].to_numpy()
    at = 0  # where the next small target's rows start in `cells`
    for pos, is_few in zip(positions, few):
        target, proto = shown["target"].iat[pos[0]], shown["protocol"].iat[pos[0]]
        if is_few:
            mine = slice(at, at + len(pos))
            at += len(pos)
            texts = [_texts((codes[mine], column)) for codes, column in cells]
            widths = [max(len(h), *map(len, t)) for h, t in zip(few_header, texts)]
            row = "  ".join(f"{{:<{w}}}" for w in widths).format
            no_answer, untested = few_no_answer[mine], few_untested[mine]
            yield ["", f"{target} ({proto})", row(*few_header).rstrip(), *(row(*c).rstrip() for c in zip(*texts))]
        else:
            rows = shown.iloc[pos]
            header, columns, no_answer, untested = _rtt_columns(rows, signals)
            widths = [max(len(h), w) for h, (_, w) in zip(header, columns)]
            row = "  ".join(f"{{:<{w}}}" for w in widths).format  # one format call per line
            yield ["", f"{target} ({proto})", row(*header).rstrip()]
            for a in range(0, len(rows), BLOCK_ROWS):
                yield _lines([text(slice(a, a + BLOCK_ROWS)) for text, _ in columns], widths)
        notes = []
        if no_answer.any():
            notes.append("* no reply to any probe: the \"no answer\" family")
        if untested.any():
            notes.append("+ " + _untestable_note(samples[pos][untested], meta))
        if family_table is not None:
            mine = evidence.get((target, proto), [])
            for f in mine:
                if f["evidence"] and f["kind"] == "answered":
                    notes.append(f"family {f['family']} apart: " + "; ".join(f["evidence"]))
            if mine:
                notes += [f"cannot tell by {note}" for note in mine[0]["unavailable"] if note not in common]
        if notes:
            yield notes
    if common:
        answering = sum(1 for fs in evidence.values() if any(f["kind"] == "answered" for f in fs))
        yield ([""] if answering > 1 else []) + (["every target that answered:"] if answering > 1 else []) + [
            f"cannot tell by {note}" for note in common]
    if fold:
        quiet = fams[silent]
        n_quiet = quiet[["target", "protocol"]].drop_duplicates().shape[0]
        yield ["", f"{n_quiet:,} targets that answered no probe (the \"no answer\" family each; no RTT):",
               f"  {first_addresses(quiet['target'].astype(str).unique().tolist())}",
               "  ports: " + _tally(quiet["port"].astype(int).astype(str) + "/" + quiet["protocol"].astype(str))]


def _common_notes(evidence: dict[tuple, list[dict]]) -> list[str]:
    """The signals every target that answered could not give (`unavailable`, said once per capture), in the
    first such target's order; targets that answered nothing miss nothing (they have no signal to read)."""
    lists = [fs[0]["unavailable"] for fs in evidence.values() if any(f["kind"] == "answered" for f in fs)]
    if not lists:
        return []
    return [note for note in lists[0] if all(note in other for other in lists[1:])]


def _untestable_note(samples: np.ndarray, meta: dict[str, object]) -> str:
    """Why the ports marked + have no RTT family, from their sample counts."""
    if meta.get("method", "robust") != "robust":
        return "fewer than two RTT samples: cannot be tested, no family"
    samples = samples[samples > 0]  # (a port answered without an RTT sample: Karn's rule dropped it)
    if not len(samples):
        return "no RTT sample (Karn's rule drops a retransmitted probe's): no family"
    lo, hi = int(samples.min()), int(samples.max())
    count = f"{lo} sample{'s' if lo != 1 else ''}" if lo == hi else f"{lo}-{hi} samples"
    when = "" if hi <= 1 else ", taken at different times"
    return (f"{count} per port{when}: RTT cannot tell machines apart here (a split needs samples in "
            f"{meta.get('min_trips', 5)} trips that probed the ports together)")


def silent_rows(fams: pd.DataFrame) -> np.ndarray:
    """Which rows of a families table belong to a (target, protocol) none of whose ports answered."""
    answered = (fams["family_kind"] != "no answer").groupby([fams["target"], fams["protocol"]], sort=False)
    return ~answered.transform("any").to_numpy(bool)


def first_addresses(targets: list[str], most: int = 5, count: bool = True) -> str:
    """The first few of many addresses, in address order ("…" after them; how many in all, with `count`)."""
    shown = ", ".join(sorted(targets, key=address_order)[:most])
    if len(targets) <= most:
        return shown
    return shown + (f", … ({len(targets):,} targets)" if count else ", …")


def port_ranges(ports: Iterable[int], most: int = 30) -> str:
    """Port numbers as ranges: "22–25, 80, 443" (the first `most` ranges, then how many more)."""
    p = np.unique(np.asarray(ports, dtype=np.int64))
    if not len(p):
        return ""
    starts = np.flatnonzero(np.r_[True, np.diff(p) > 1])
    ends = np.r_[starts[1:], len(p)] - 1
    parts = [str(p[a]) if a == b else f"{p[a]}–{p[b]}" for a, b in zip(starts, ends)]
    return ", ".join(parts[:most]) + (f", … ({len(parts) - most} more ranges)" if len(parts) > most else "")


def _tally(texts: pd.Series, most: int = 5) -> str:
    """The most common texts with their counts: "22/tcp ×4,096; 80/tcp ×12; …"."""
    counts = texts.value_counts()
    return "; ".join(f"{k} ×{n:,}" for k, n in counts.head(most).items()) + ("; …" if len(counts) > most else "")


def _rtt_columns(rows: pd.DataFrame, signals: bool) -> tuple[list[str], list[tuple[Callable[[slice], list[str]], int]],
                                                             np.ndarray, np.ndarray]:
    """The rtt table's header, and per column (the texts of a block of rows, the widest text of all rows);
    which rows have no answer (*) and which could not be tested (+)."""
    kind = rows["family_kind"]
    no_answer = (kind == "no answer").to_numpy(bool)
    untested = ((kind == "untestable") & ~(signals & (rows["family"] >= 0))).to_numpy(bool)
    family = rows["family"].astype("Int64").where(rows["family"] >= 0)
    loss = 100 * rows["loss"]

    def families(r: slice) -> Coded:
        codes, texts = _coded(family.iloc[r])
        # (family, *, +) of each row as one code; each distinct one's text made once
        marked, combos = pd.factorize((codes % len(texts)) * 4 + no_answer[r] * 2 + untested[r])
        return marked, [texts[c >> 2] + "*" * (c >> 1 & 1) + "+" * (c & 1) for c in combos.tolist()]

    header = ["PORT", "FAMILY", "MEAN (us)", "STDDEV", "LOSS (%)"]
    columns = [(lambda r: _coded(rows["port"].iloc[r]), _width(rows["port"])),
               (families, _family_width(family, no_answer, untested)),
               (lambda r: _fixed(rows["mean_us"].iloc[r]), _width(rows["mean_us"].astype(float), "{:.2f}")),
               (lambda r: _fixed(rows["stddev_us"].iloc[r]), _width(rows["stddev_us"].astype(float), "{:.2f}")),
               (lambda r: _coded(loss.iloc[r], "{:.1f}%"), _width(loss, "{:.1f}%"))]
    if signals:
        header += ["SIGNAL", "TTL"]
        ttl = rows["ttl"].astype("Int64")
        columns += [(lambda r: _coded(rows["deciding_signal"].iloc[r]), _width(rows["deciding_signal"])),
                    (lambda r: _coded(ttl.iloc[r]), _width(ttl))]
    return header, columns, no_answer, untested


def _width(values: pd.Series, fmt: str = "{}") -> int:
    """Length of the widest text `_text(values, fmt)` makes, without making every text: an integer's, or a
    number's in fixed point ("{:.2f}"), from the column's extremes (its text grows with its size); anything
    else's from the distinct values; "-" where missing."""
    present = values.dropna()
    kind = present.dtype.kind if isinstance(present.dtype, np.dtype) else present.to_numpy().dtype.kind
    if kind in "iu" or (kind == "f" and re.search(r"\.\d+f", fmt)):
        probe = [present.max(), present.min()] if len(present) else []
    else:
        probe = pd.unique(present.to_numpy(dtype=object))
    widest = max((len(fmt.format(v)) for v in probe), default=0)
    return max(widest, 1) if len(present) < len(values) else widest


def _family_width(family: pd.Series, no_answer: np.ndarray, untested: np.ndarray) -> int:
    """Widest FAMILY cell: the family's text (\"-\" when none) and its marks (* no answer, + untested)."""
    codes, uniques = pd.factorize(family.to_numpy(dtype=object, na_value=None), use_na_sentinel=False)
    lengths = np.array([len(_text(pd.Series([u], dtype=object))[0]) for u in uniques], np.int64)
    if not len(codes):
        return 0
    return int((lengths[codes] + no_answer + untested).max())


def service_name(port: int, protocol: str) -> str:
    """The system's name for a port (/etc/services), as nmap's SERVICE column shows it."""
    if protocol == "ip":
        return _ip_protocols().get(int(port), "unknown")
    return _services().get((int(port), protocol), "unknown")


def _service_names(port: pd.Series, protocol: pd.Series) -> np.ndarray:
    """service_name of each row (an object array), looked up for all rows of a protocol at once."""
    proto_codes, protocols = pd.factorize(protocol)
    ports = port.to_numpy(np.int64)
    names = np.full(len(ports), "unknown", dtype=object)
    for code, proto in enumerate(protocols.tolist()):
        rows = np.flatnonzero(proto_codes == code)
        known, known_names = _service_table(proto)
        at = np.minimum(np.searchsorted(known, ports[rows]), max(len(known) - 1, 0))
        hit = known[at] == ports[rows] if len(known) else np.zeros(len(rows), bool)
        names[rows[hit]] = known_names[at[hit]]
    return names


@functools.cache
def _service_table(protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """The ports `service_name` knows for a protocol, ascending, and their names."""
    table = _ip_protocols() if protocol == "ip" else {p: name for (p, pr), name in _services().items() if pr == protocol}
    ports = np.array(sorted(table), dtype=np.int64)
    return ports, np.array([table[p] for p in ports.tolist()], dtype=object)


@functools.cache
def _services() -> dict[tuple[int, str], str]:
    """(port, protocol) → name from /etc/services (netbase), read once: the first entry wins, as in
    getservbyport(3), which scans the file on every call (65,535 ports cost it seconds)."""
    names: dict[tuple[int, str], str] = {}
    try:
        with open("/etc/services", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 2 and "/" in parts[1]:
                    number, _, proto = parts[1].partition("/")
                    if number.isdigit():
                        names.setdefault((int(number), proto), parts[0])
    except OSError:
        pass
    return names


@functools.cache
def _ip_protocols() -> dict[int, str]:
    """IP protocol numbers → names from /etc/protocols (netbase), for -sO scans' tables."""
    names: dict[int, str] = {}
    try:
        with open("/etc/protocols", encoding="utf-8") as f:
            for line in f:
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 2 and parts[1].isdigit():
                    names.setdefault(int(parts[1]), parts[0])
    except OSError:
        pass
    return names


def utc(seconds: float, day_of: float | None = None) -> str:
    """UTC time to the millisecond; without the date when it is the day of `day_of` (the capture's start)."""
    import datetime as dt

    t = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    same_day = day_of is not None and t.date() == dt.datetime.fromtimestamp(day_of, dt.timezone.utc).date()
    return t.strftime("%H:%M:%S.%f" if same_day else "%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def scans_json(scans: pd.DataFrame, states: pd.DataFrame, hosts: pd.DataFrame, meta: dict[str, object],
               notes: pd.DataFrame | None = None) -> bytes:
    """The scans result as JSON (UTF-8): indented up to INDENT_UP_TO_ROWS port states, else compact."""
    return b"".join(scans_json_pieces(scans, states, hosts, meta, notes))


PORT_JSON_COLUMNS = ["port", "protocol", "state", "reason", "probes", "service", "probe_frame", "reply_frame"]


def scans_json_pieces(scans: pd.DataFrame, states: pd.DataFrame, hosts: pd.DataFrame, meta: dict[str, object],
                      notes: pd.DataFrame | None = None) -> Iterator[bytes]:
    """`scans_json` in pieces, to be written one after the other. In a big result, a scan of many ports has its
    port states written column-wise (`_DEFERRED`, `_records_json`); the others' records are made in one pass
    (a sweep has a scan per target: one pass, not one per target)."""
    indent = len(states) <= INDENT_UP_TO_ROWS
    by_scan = states_by_scan(states)
    st = states.assign(port=states["port"].astype(int), probes=states["probes"].astype(int),
                       service=_service_names(states["port"], states["protocol"]),
                       probe_frame=states["probe_frame"].astype("Int64"),
                       reply_frame=states["reply_frame"].astype("Int64"))[PORT_JSON_COLUMNS]
    st, scans, hosts, notes = with_labels(st), with_labels(scans), with_labels(hosts), with_labels(notes)
    keys = [(int(p), str(t)) for p, t in zip(scans["phase"], scans["target"])]
    rows_of = [by_scan.get(key) for key in keys]
    deferred_at = [rows is not None and not indent and len(rows) >= DEFER_ROWS for rows in rows_of]
    as_dicts = [rows for rows, d in zip(rows_of, deferred_at) if rows is not None and not d]
    records = iter(_records(st.iloc[np.concatenate(as_dicts)], PORT_JSON_COLUMNS) if as_dicts else [])
    out, deferred = [], []
    for rec, rows, defer in zip(_records(scans, list(scans.columns)), rows_of, deferred_at):
        if rows is None:
            ports: object = []
        elif defer:
            ports = _DEFERRED
            deferred.append((st.iloc[rows], PORT_JSON_COLUMNS))
        else:
            ports = [next(records) for _ in range(len(rows))]
        out.append(rec | {"ports": ports})
    host_list = _records(hosts, list(hosts.columns))
    note_list = _records(notes, list(notes.columns)) if notes is not None and len(notes) else []
    return _streamed({**meta, "scans": out, "notes": note_list, "hosts": host_list}, deferred, indent=indent)


def scans_csv(states: pd.DataFrame, scans: pd.DataFrame | None = None) -> str:
    """One row per (phase, target, port) of the port scans, with the stage each belongs to; then one row per
    target of the other stages (host discovery, OS detection, traceroute), its host state in `state` and what
    it sent in `reason`."""
    out = states.assign(stage="port scan")
    if scans is not None and len(scans):
        others = scans[scans["stage"] != "port scan"]
        if len(others):
            rows = pd.DataFrame({"scanner": others["scanner"], "target": others["target"], "phase": others["phase"],
                                 "type": others["type"], "protocol": "", "port": pd.NA,
                                 "state": others["host_state"], "reason": others["flags"], "probes": others["probes"],
                                 "reply_ttl": np.nan, "reply_window": np.nan, "probe_frame": others["first_frame"],
                                 "reply_frame": np.nan, "stage": others["stage"]})
            out = pd.concat([out, rows], ignore_index=True).sort_values(["phase"], kind="stable")
    columns = ["stage"] + [c for c in out.columns if c != "stage"]
    frame_columns = {c: "Int64" for c in ("port", "probe_frame", "reply_frame") if c in out.columns}
    return with_labels(out[columns].astype(frame_columns)).to_csv(index=False)


def states_by_scan(states: pd.DataFrame) -> dict[tuple[int, str], np.ndarray]:
    """(phase, target) → the positions of its rows in `states`, in order: one pass, not a filter per scan."""
    if not len(states):
        return {}
    target, targets = pd.factorize(states["target"].astype(str))
    phase = states["phase"].to_numpy(np.int64)
    positions = group_positions(group_ids(phase, target))
    firsts = [int(rows[0]) for rows in positions]
    return {(int(p), str(targets[t])): rows
            for p, t, rows in zip(phase[firsts].tolist(), target[firsts].tolist(), positions)}


def silent_targets(scans: pd.DataFrame, states: pd.DataFrame, by_scan: dict[tuple[int, str], np.ndarray],
                   over: int = SILENT_TARGETS_OVER) -> set[tuple[int, str]]:
    """The (phase, target) of a sweep (a phase of more than `over` targets) that answered none of its probes:
    every port's reason "no-response". nmap leaves out hosts that do not answer (unless told -Pn), zmap and
    masscan list only answers: a report shows them as one line, not one table each."""
    if not len(scans):
        return set()
    n_targets = scans.groupby("phase")["target"].transform("size").to_numpy()
    no_reply = (states["reason"] == "no-response").to_numpy(bool) if len(states) else np.zeros(0, bool)
    return {(int(ph), str(t)) for ph, t, n in zip(scans["phase"], scans["target"], n_targets)
            if n > over and (rows := by_scan.get((int(ph), str(t)))) is not None and no_reply[rows].all()}


def silent_summary(states: pd.DataFrame, rows: list[np.ndarray], targets: list[str], most: int = 5
                   ) -> tuple[str, str]:
    """The silent targets of a phase in two lines: the first few addresses (in address order) and how many;
    their ports' states, the most common first."""
    st = states.iloc[np.concatenate(rows)]
    ports = st["port"].astype(int).astype(str) + "/" + st["protocol"].astype(str) + " " + st["state"].astype(str)
    return first_addresses(targets, most), _tally(ports, most)


def scans_table(scans: pd.DataFrame, states: pd.DataFrame, meta: dict[str, object], hide_over: int = 25,
                silent_over: int = SILENT_TARGETS_OVER, notes: pd.DataFrame | None = None) -> str:
    """Per scan phase and target, the table its operator would have seen: PORT STATE SERVICE REASON, and the
    frames that show it. A sweep's targets that answered nothing are one block per phase (`silent_targets`), as
    are a discovery sweep's. The other stages of a run (host discovery, OS detection, traceroute) are blocks of
    their own; what resembles a scan and is not one closes the table, with the reason."""
    lines = [f"# {capture_text(meta['capture'])}: {scans_count(scans)}"]
    if scans.empty:
        lines.append("no port scan found")
    by_scan = states_by_scan(states)
    silent = silent_targets(scans, states, by_scan, silent_over)
    folded: dict[int, list] = {}  # phase → (row, its states' positions) of its silent targets
    phases = scans["phase"].astype(int).tolist()
    sizes = scans["phase"].value_counts().to_dict() if len(scans) else {}
    done_stage: set[int] = set()
    for pos, s in enumerate(scans.to_dict("records")):  # (a sweep has a row per target: no Series per row)
        key = (phases[pos], str(s["target"]))
        if s["stage"] != "port scan":
            if key[0] in done_stage:
                continue
            if sizes[key[0]] > silent_over:
                done_stage.add(key[0])
                _sweep_block(lines, scans[scans["phase"] == key[0]])
            else:
                _stage_block(lines, s)
            continue
        if key in silent:
            folded.setdefault(key[0], []).append((s, by_scan[key]))
        else:
            _scan_block(lines, s, states.iloc[by_scan.get(key, np.zeros(0, np.int64))], hide_over)
        last_of_phase = pos + 1 == len(scans) or phases[pos + 1] != key[0]
        if last_of_phase and key[0] in folded:
            quiet = folded.pop(key[0])
            first = min(q["first"] for q, _ in quiet)
            last = max(q["last"] for q, _ in quiet)
            shown, ports = silent_summary(states, [r for _, r in quiet], [str(q["target"]) for q, _ in quiet])
            lines.append("")
            lines.append(f"{s['type']} scan ({s['flags'] or '-'}) {s['scanner']} -> {len(quiet):,} targets that "
                         f"answered nothing  [{s['tool'] if s['tool'] != 'unknown' else 'tool unknown'}; "
                         f"{s['shape']}; {sum(int(q['probes']) for q, _ in quiet):,} probes]")
            lines.append(f"  {utc(first)} .. {utc(last)}")
            lines.append(f"  {shown}")
            lines.append(f"  ports: {ports}")
    if notes is not None and len(notes):
        lines.append("")
        lines.append("Not read as scans:")
        for n in notes.to_dict("records"):
            lines.append(f"  {n['kind']}: {n['scanner']}: {n['evidence']}  (frames {_frame_list(n['frames'])})")
    return "\n".join(lines)


def scans_count(scans: pd.DataFrame) -> str:
    """The table's first line's count: the port scans (a scanner's phase, of one target or a sweep of many), the
    targets they probed, and the other stages of runs (a discovery sweep is one)."""
    port_scan = (scans["stage"] == "port scan").to_numpy() if len(scans) else np.zeros(0, bool)
    n_scans = scans.loc[port_scan, "phase"].nunique()
    text = f"{n_scans} port scan(s)"
    if n_scans:
        text += f" of {scans.loc[port_scan, 'target'].nunique():,} target(s)"
    others = scans[~port_scan]
    if len(others):
        text += f", {len(others.drop_duplicates(['phase', 'stage'])):,} other stage(s)"
    return text


def _frame_list(frames: object) -> str:
    return frame_list(frames) or "-"


def _span(s: dict) -> str:
    frames = (f"  (frames {frame_text(s['first_frame'])}..{frame_text(s['last_frame'])})"
              if pd.notna(s.get("first_frame")) and pd.notna(s.get("last_frame")) else "")
    return f"  {utc(s['first'])} .. {utc(s['last'])}{frames}"


def _tool_lines(lines: list[str], s: dict) -> None:
    if s.get("tool_evidence"):
        frames = s.get("tool_frames")
        shown = f"  (frames {_frame_list(frames)})" if isinstance(frames, (list, tuple)) and frames else ""
        lines.append(f"  tool evidence: {s['tool_evidence']}{shown}")


def _block_head(lines: list[str], s: dict, title: str, facts: str, evidence_label: str) -> None:
    """A block's first lines: its title and [tool; facts], its times and frames, its evidence and the tool's."""
    lines.append("")
    tool = s["tool"] if s["tool"] != "unknown" else "tool unknown"
    lines.append(f"{title}  [{tool}; {facts}]")
    lines.append(_span(s))
    if s.get("evidence"):
        lines.append(f"  {evidence_label}: {s['evidence']}")
    _tool_lines(lines, s)


def _scan_block(lines: list[str], s: dict, mine: pd.DataFrame, hide_over: int) -> None:
    _block_head(lines, s, f"{s['type']} scan ({s['flags'] or '-'}) {s['scanner']} -> {s['target']}",
                f"{s['shape']}; {_probes_and_rate(s)}", "why a scan")
    shown = mine
    note = ""
    if len(mine) > hide_over:
        common = mine["state"].mode().iloc[0]
        hidden = mine[mine["state"] == common]
        shown = mine[mine["state"] != common]
        note = f"Not shown: {len(hidden):,} {common} ports" + (" (all of them)" if shown.empty else "")
    rows = [[f"{int(r['port'])}/{r['protocol']}", r["state"], service_name(r["port"], r["protocol"]), str(r["reason"]),
             _decided_by(r)] for r in shown.to_dict("records")]
    if note:
        lines.append(note)
    if not rows and note:
        return
    header = ["PORT", "STATE", "SERVICE", "REASON", "FRAMES"]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    for row in [header] + rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _counted(n: int, one: str, many: str | None = None) -> str:
    """"1 probe", "2 probes": a count and its noun."""
    return f"{int(n)} {one}" if int(n) == 1 else f"{int(n)} {many or one + 's'}"


def _probes_and_rate(s: dict) -> str:
    """"N probes, R/s"; without a rate where the probes were sent in one instant (one probe: none to tell)."""
    n = int(s["probes"])
    text = f"{n:,} probe{'s' if n != 1 else ''}"
    return f"{text}, {s['rate']:.1f}/s" if pd.notna(s["rate"]) else text


def _decided_by(state: dict) -> str:
    """The frames behind a port's state: its deciding probe, and the reply to it ("14 -> 15")."""
    return probe_and_reply(state.get("probe_frame"), state.get("reply_frame")) or "-"


def _stage_block(lines: list[str], s: dict) -> None:
    """A stage of a run other than a port scan: host discovery, OS detection, a traceroute."""
    state = f": host {s['host_state']}" if s.get("host_state") in ("up", "down") else ""
    _block_head(lines, s, f"{s['stage'][:1].upper()}{s['stage'][1:]} ({s['flags']}) {s['scanner']} -> {s['target']}{state}",
                _probes_and_rate(s | {"rate": None}), "sent")


def _sweep_block(lines: list[str], rows: pd.DataFrame) -> None:
    """A discovery stage of many targets (an ARP or ping sweep): the hosts that answered, and how many did not."""
    s = rows.iloc[0].to_dict()
    up = rows.loc[rows["host_state"] == "up", "target"].astype(str).tolist()
    lines.append("")
    tool = s["tool"] if s["tool"] != "unknown" else "tool unknown"
    lines.append(f"{s['stage'][:1].upper()}{s['stage'][1:]} ({s['flags']}) {s['scanner']} -> {len(rows):,} addresses: "
                 f"{len(up):,} up, {len(rows) - len(up):,} down  [{tool}; {int(rows['probes'].sum()):,} probes]")
    lines.append(f"  {utc(rows['first'].min())} .. {utc(rows['last'].max())}  (frames {frame_text(rows['first_frame'].min())}.."
                 f"{frame_text(rows['last_frame'].max())})")
    if s.get("evidence"):
        lines.append(f"  sent: {s['evidence']}")
    if up:
        lines.append(f"  up: {first_addresses(sorted(up, key=address_order), 20, count=False)}")


def hosts_table(hosts: pd.DataFrame) -> str:
    lines = []
    for h in hosts.itertuples():
        # (a text column holds NaN where a host has no value: pandas' missing string, truthy as a float)
        mac, vendor, os_hint, evidence = (v if isinstance(v, str) and v else None
                                          for v in (h.mac, h.vendor, h.os, h.os_evidence))
        lines.append(f"{h.address}")
        via = getattr(h, "via", None)
        if mac:
            lines.append(f"  MAC {mac} ({vendor or 'unknown'})")
        elif isinstance(via, str) and via:
            lines.append(f"  via gateway {via} ({getattr(h, 'via_vendor', None) or 'unknown'}): the host is hops away")
        if os_hint:
            lines.append(f"  OS hint: {os_hint}")
        elif evidence:
            lines.append(f"  evidence: {evidence}")
    return "\n".join(lines) if lines else "no hosts"
