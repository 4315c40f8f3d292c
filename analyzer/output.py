"""Results → text for people (qscan's table), JSON and CSV for programs."""

from __future__ import annotations

import json
import math

import pandas as pd

RTT_COLUMNS = ["port", "protocol", "family", "family_kind", "sent", "received", "loss", "retransmissions",
               "samples", "mean_us", "stddev_us", "min_us", "median_us", "p95_us"]
SIGNAL_COLUMNS = ["rtt_family", "deciding_signal", "ttl", "ttl_agree", "window", "options", "ip_id_class",
                  "ts_offset", "ts_rate"]


def _num(value: object, digits: int = 2) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float):
        return round(value, digits)
    if hasattr(value, "item"):
        return _num(value.item(), digits)
    return value


def rtt_json(fams: pd.DataFrame, meta: dict[str, object], family_table: pd.DataFrame | None = None) -> str:
    targets = []
    columns = RTT_COLUMNS + [c for c in SIGNAL_COLUMNS if c in fams.columns]
    for target, rows in fams.groupby("target", sort=False):
        ports = [{k: _num(r[k], 4 if k == "loss" else 2) for k in columns} for _, r in rows.iterrows()]
        for p in ports:
            for key in ("family", "rtt_family"):
                if p.get(key) == -1:
                    p[key] = None
        groups = []
        if family_table is not None:
            for _, f in family_table[family_table["target"] == target].iterrows():
                groups.append({"family": int(f["family"]), "protocol": f["protocol"], "kind": f["kind"],
                               "ports": [int(p) for p in f["ports"]], "signals": list(f["signals"]),
                               "evidence": list(f["evidence"])})
        for (proto, fam), members in ([] if family_table is not None else
                                      rows[rows["family"] >= 0].groupby(["protocol", "family"], sort=True)):
            groups.append({"family": int(fam), "protocol": proto, "kind": members["family_kind"].iloc[0],
                           "ports": [int(p) for p in members["port"]]})
        entry = {"address": target, "ports": ports, "families": groups}
        if family_table is not None:
            mine = family_table[family_table["target"] == target]
            entry["signals_unavailable"] = list(mine["unavailable"].iloc[0]) if len(mine) else []
        targets.append(entry)
    return json.dumps({**meta, "targets": targets}, indent=2)


def rtt_csv(fams: pd.DataFrame) -> str:
    return fams[["target"] + RTT_COLUMNS].to_csv(index=False, float_format="%.3f")


def rtt_table(fams: pd.DataFrame, meta: dict[str, object], family_table: pd.DataFrame | None = None) -> str:
    """qscan's table (PORT FAMILY MEAN (us) STDDEV LOSS (%)) for each target."""
    lines = [f"# {meta['capture']}: method {meta['method']}, confidence {meta['confidence']}, "
             f"{meta['probes_matched']} probes, {meta['unsolicited_replies']} unsolicited replies"]
    for (target, proto), rows in fams.groupby(["target", "protocol"], sort=False):
        lines.append("")
        lines.append(f"{target} ({proto})")
        signals = "deciding_signal" in rows.columns
        header = ["PORT", "FAMILY", "MEAN (us)", "STDDEV", "LOSS (%)"] + (["SIGNAL", "TTL"] if signals else [])
        body = []
        notes = set()
        for _, r in rows.iterrows():
            fam = str(r["family"]) if r["family"] >= 0 else "-"
            if r["family_kind"] != "answered" and not (signals and r["family_kind"] == "too few samples" and r["family"] >= 0):
                fam += "*" if r["family_kind"] == "no answer" else "+"
                notes.add(r["family_kind"])
            mean = "-" if math.isnan(r["mean_us"]) else f"{r['mean_us']:.2f}"
            std = "-" if math.isnan(r["stddev_us"]) else f"{r['stddev_us']:.2f}"
            extra = []
            if signals:
                deciding = r["deciding_signal"]
                extra = ["-" if deciding is None or pd.isna(deciding) else str(deciding),
                         "-" if pd.isna(r["ttl"]) else str(int(r["ttl"]))]
            body.append([str(r["port"]), fam, mean, std, f"{100 * r['loss']:.1f}%"] + extra)
        widths = [max(len(x) for x in col) for col in zip(header, *body)]
        for row in [header] + body:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if "no answer" in notes:
            lines.append("* no reply to any probe: the \"no answer\" family")
        if "too few samples" in notes:
            lines.append("+ fewer than two RTT samples: cannot be tested, no family")
        if family_table is not None:
            mine = family_table[(family_table["target"] == target) & (family_table["protocol"] == proto)]
            for _, f in mine.iterrows():
                if f["evidence"] and f["kind"] == "answered":
                    lines.append(f"family {f['family']} apart: " + "; ".join(f["evidence"]))
            if len(mine):
                for note in mine["unavailable"].iloc[0]:
                    lines.append(f"cannot tell by {note}")
    return "\n".join(lines)


def service_name(port: int, protocol: str) -> str:
    """The system's name for a port (/etc/services), as nmap's SERVICE column shows it."""
    import socket

    if protocol == "ip":
        return _ip_protocols().get(int(port), "unknown")
    try:
        return socket.getservbyport(int(port), protocol)
    except (OSError, OverflowError):
        return "unknown"


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


def _epoch_text(seconds: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def scans_json(scans: pd.DataFrame, states: pd.DataFrame, hosts: pd.DataFrame, meta: dict[str, object]) -> str:
    out = []
    for _, s in scans.iterrows():
        mine = states[(states["phase"] == s["phase"]) & (states["target"] == s["target"])]
        ports = [{"port": int(r["port"]), "protocol": r["protocol"], "state": r["state"], "reason": r["reason"],
                  "service": service_name(r["port"], r["protocol"]), "probes": int(r["probes"])}
                 for _, r in mine.iterrows()]
        out.append({k: _num(s[k], 6 if k in ("first", "last") else 2) for k in scans.columns} | {"ports": ports})
    host_list = [{k: (None if pd.isna(v) else _num(v)) for k, v in h.items()} for _, h in hosts.iterrows()]
    return json.dumps({**meta, "scans": out, "hosts": host_list}, indent=2)


def scans_csv(states: pd.DataFrame) -> str:
    return states.to_csv(index=False)


def scans_table(scans: pd.DataFrame, states: pd.DataFrame, meta: dict[str, object], hide_over: int = 25) -> str:
    """Per scan phase and target, the table its operator would have seen: PORT STATE SERVICE."""
    lines = [f"# {meta['capture']}: {len(scans)} scan(s)"]
    if scans.empty:
        lines.append("no port scan found")
    for _, s in scans.iterrows():
        lines.append("")
        tool = s["tool"] if s["tool"] != "unknown" else "tool unknown"
        lines.append(f"{s['type']} scan ({s['flags'] or '-'}) {s['scanner']} -> {s['target']}  [{tool}; {s['shape']}; "
                     f"{s['probes']} probes, {s['rate']:.1f}/s]")
        lines.append(f"  {_epoch_text(s['first'])} .. {_epoch_text(s['last'])}")
        if s["tool_evidence"]:
            lines.append(f"  tool evidence: {s['tool_evidence']}")
        mine = states[(states["phase"] == s["phase"]) & (states["target"] == s["target"])]
        shown = mine
        note = ""
        if len(mine) > hide_over:
            common = mine["state"].mode().iloc[0]
            hidden = mine[mine["state"] == common]
            shown = mine[mine["state"] != common]
            note = f"Not shown: {len(hidden)} {common} ports"
        rows = [[f"{int(r['port'])}/{r['protocol']}", r["state"], service_name(r["port"], r["protocol"])]
                for _, r in shown.iterrows()]
        if note:
            lines.append(note)
        header = ["PORT", "STATE", "SERVICE"]
        widths = [max(len(x) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
        for row in [header] + rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def hosts_table(hosts: pd.DataFrame) -> str:
    lines = []
    for _, h in hosts.iterrows():
        lines.append(f"{h['address']}")
        if h["mac"]:
            lines.append(f"  MAC {h['mac']} ({h['vendor']})")
        if h["os"]:
            lines.append(f"  OS hint: {h['os']}")
        elif h["os_evidence"]:
            lines.append(f"  evidence: {h['os_evidence']}")
    return "\n".join(lines) if lines else "no hosts"
