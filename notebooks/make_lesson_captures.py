#!/usr/bin/env python3
"""Make the scan captures the classroom notebooks read, into sample_pcaps/ as ``scans_NAME.pcap``.

Needs root, nmap, hping3, tcpdump and tshark: it builds the scan lab of tests/support/scanlab.py in network
namespaces (prefix ``slnb``) and runs tests/support/make_scan_captures.py's ``make_all`` for a few of its
captures, then copies each ``NAME.pcap``/``NAME.truth.json``/``NAME*.nmap.xml`` to
``sample_pcaps/scans_NAME.*`` (the truth's ``file`` renamed to match). All traffic stays inside the
lab's namespaces.

    sudo python3 notebooks/make_lesson_captures.py [--only syn fin ...] [--keep DIR]
    python3 notebooks/make_lesson_captures.py --from DIR     # only copy captures made before into DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLES = ROOT / "sample_pcaps"
sys.path.insert(0, str(ROOT / "tests" / "support"))

from make_scan_captures import make_all, summary

# One capture per technique lesson 2 reads, the multi-phase capture of lesson 3, and hping3's, masscan's, zmap's.
LESSON_CAPTURES = ["syn", "connect", "fin", "null", "xmas", "ack", "udp", "hping3", "masscan", "zmap", "multi",
                   "ordinary_dns", "ordinary_web"]  # the last two: ordinary traffic only, no scan
PREFIX = "slnb"
MAX_BYTES = 1 << 20


def copy_capture(src: Path, name: str, dest: Path) -> Path:
    """Copy capture NAME (and its truth, and the tool's own output: nmap's XML, masscan's JSON, zmap's CSV)
    from `src` to `dest` as scans_NAME.*."""
    stem = f"scans_{name}"
    pcap = dest / f"{stem}.pcap"
    shutil.copyfile(src / f"{name}.pcap", pcap)
    truth = json.loads((src / f"{name}.truth.json").read_text(encoding="utf-8"))
    truth["file"] = pcap.name
    # nmap's -oX paths point into the scratch directory: name the copies instead
    truth["commands"] = [c.replace(f"{src}/{name}.", f"{stem}.") for c in truth["commands"]]
    truth["made_by"] = "notebooks/make_lesson_captures.py (tests/support/make_scan_captures.py: make_all)"
    (dest / f"{stem}.truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    for output in sorted(src.glob(f"{name}.*")):
        if output.name not in (f"{name}.pcap", f"{name}.truth.json"):
            shutil.copyfile(output, dest / output.name.replace(name, stem, 1))
    if pcap.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{pcap} is {pcap.stat().st_size} bytes, over the {MAX_BYTES} limit")
    return pcap


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=LESSON_CAPTURES, help="captures to remake (default: all)")
    ap.add_argument("--keep", help="make the captures in this directory (kept) instead of a temporary one")
    ap.add_argument("--from", dest="source", help="copy the captures already made in this directory; make none")
    ap.add_argument("--out", default=str(SAMPLES), help="where to copy them (default: sample_pcaps/)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    names = args.only or LESSON_CAPTURES
    out = Path(args.out)
    if args.source:
        for name in names:
            print("->", copy_capture(Path(args.source).resolve(), name, out))
        return 0
    with tempfile.TemporaryDirectory(prefix="slnb-") as tmp:
        work = Path(args.keep).resolve() if args.keep else Path(tmp)
        truths = make_all(work, only=names, prefix=PREFIX)
        print(summary(truths))
        for name in names:
            print("->", copy_capture(work, name, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
