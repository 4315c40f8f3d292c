"""Results → text for people (qscan's table), JSON and CSV for programs."""

from __future__ import annotations

import json
import math

import pandas as pd

RTT_COLUMNS = ["port", "protocol", "family", "family_kind", "sent", "received", "loss", "retransmissions",
               "samples", "mean_us", "stddev_us", "min_us", "median_us", "p95_us"]


def _num(value: object, digits: int = 2) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float):
        return round(value, digits)
    if hasattr(value, "item"):
        return _num(value.item(), digits)
    return value


def rtt_json(fams: pd.DataFrame, meta: dict[str, object]) -> str:
    targets = []
    for target, rows in fams.groupby("target", sort=False):
        ports = [{k: _num(r[k], 4 if k == "loss" else 2) for k in RTT_COLUMNS} for _, r in rows.iterrows()]
        for p in ports:
            if p["family"] == -1:
                p["family"] = None
        groups = []
        for (proto, fam), members in rows[rows["family"] >= 0].groupby(["protocol", "family"], sort=True):
            groups.append({"family": int(fam), "protocol": proto, "kind": members["family_kind"].iloc[0],
                           "ports": [int(p) for p in members["port"]]})
        targets.append({"address": target, "ports": ports, "families": groups})
    return json.dumps({**meta, "targets": targets}, indent=2)


def rtt_csv(fams: pd.DataFrame) -> str:
    return fams[["target"] + RTT_COLUMNS].to_csv(index=False, float_format="%.3f")


def rtt_table(fams: pd.DataFrame, meta: dict[str, object]) -> str:
    """qscan's table (PORT FAMILY MEAN (us) STDDEV LOSS (%)) for each target."""
    lines = [f"# {meta['capture']}: method {meta['method']}, confidence {meta['confidence']}, "
             f"{meta['probes_matched']} probes, {meta['unsolicited_replies']} unsolicited replies"]
    for (target, proto), rows in fams.groupby(["target", "protocol"], sort=False):
        lines.append("")
        lines.append(f"{target} ({proto})")
        header = ["PORT", "FAMILY", "MEAN (us)", "STDDEV", "LOSS (%)"]
        body = []
        notes = set()
        for _, r in rows.iterrows():
            fam = str(r["family"]) if r["family"] >= 0 else "-"
            if r["family_kind"] != "answered":
                fam += "*" if r["family_kind"] == "no answer" else "+"
                notes.add(r["family_kind"])
            mean = "-" if math.isnan(r["mean_us"]) else f"{r['mean_us']:.2f}"
            std = "-" if math.isnan(r["stddev_us"]) else f"{r['stddev_us']:.2f}"
            body.append([str(r["port"]), fam, mean, std, f"{100 * r['loss']:.1f}%"])
        widths = [max(len(x) for x in col) for col in zip(header, *body)]
        for row in [header] + body:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if "no answer" in notes:
            lines.append("* no reply to any probe: the \"no answer\" family")
        if "too few samples" in notes:
            lines.append("+ fewer than two RTT samples: cannot be tested, no family")
    return "\n".join(lines)
