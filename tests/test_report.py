"""`synlens report`: the HTML report of a capture (analyzer/render/report.py), checked as text and in a real browser.

As text: every section is there (or says it is empty), the number of plots follows from the analysis, nothing
is referenced outside the file, no script or event handler is present, strings from the capture are escaped
(addresses are replaced by hostile strings to prove it), big scans are subsampled and rasterized.
In a browser: Debian's chromium, headless, renders each report with no console message at all (a negative
control checks such messages would be seen) and the sections in its DOM; skipped, visibly, without chromium.

Regenerate the screenshot in docs/: ``PYTHONPATH=. python tests/test_report.py --screenshot docs/report.png``.
"""

from __future__ import annotations

import html.parser
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REALWORLD

from analyzer import match, read
from analyzer.analysis.families import families
from analyzer.analysis.scans import scans
from analyzer.analysis.stats import rtt_samples
from analyzer.errors import CaptureError
from analyzer.render import report

REPO = Path(__file__).resolve().parent.parent

SAMPLES = {
    "nat_qscan": REPO / "sample_pcaps" / "nat_qscan.pcap",
    "nat_hping3": REPO / "sample_pcaps" / "nat_hping3.pcap",
    "basic": REPO / "tests" / "data" / "edge" / "basic.pcap",
}
SECTIONS = ("capture", "hosts", "scans", "ports", "families")
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>$\\x$&amp;--> '
# tags and attributes that could run code or fetch something; none may appear anywhere in a report
FORBIDDEN_TAGS = {"script", "iframe", "object", "embed", "link", "img", "foreignobject", "base", "form", "audio", "video"}


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("reports")
    paths = {}
    for name, capture in SAMPLES.items():
        paths[name] = out / f"{name}.html"
        report.write_report(str(capture), str(paths[name]))
    return paths


def expected_plots(capture: Path) -> int:
    """Plots the report should hold, from the analysis itself: per scan phase its port walk, one probe-rate
    plot, one fingerprint per scanner, one RTT plot per (target, protocol) with samples."""
    packets = read(str(capture))
    probes = match(packets)
    found, _ = scans(packets, probes)
    fams = families(probes)
    n = 0
    if len(found):
        n += found["phase"].nunique() + 1 + found["scanner"].nunique()
    samples = rtt_samples(probes)
    n += sum(1 for (t, p), _ in fams.groupby(["target", "protocol"]) if any(k[:2] == (t, p) for k in samples))
    return n


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sections_and_plots(built: dict[str, Path], name: str) -> None:
    page = built[name].read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page, sid
    assert page.count("<svg") == expected_plots(SAMPLES[name]) > 0
    assert page.count("<figure") == page.count("<figcaption>") == page.count("<svg")
    packets = read(str(SAMPLES[name]))
    assert f"<dd>{len(packets):,}</dd>" in page  # packets
    assert re.search(r"<code>[0-9a-f]{64}</code>", page)  # SHA-256
    assert "PORT" in page and "STATE" in page and "SERVICE" in page
    for scanner in ("10.77.1.2", "10.0.0.9"):
        if scanner in page:
            assert f"probes sent by {scanner}" in page


def test_qscan_sample_content(built: dict[str, Path]) -> None:
    page = built["nat_qscan"].read_text(encoding="utf-8")
    assert "qscan.nse" in page and "nmap" in page  # the tool and its evidence
    assert 'id="walk-0"' in page and 'id="rate"' in page and 'id="fingerprint-0"' in page and 'id="rtt-0"' in page
    assert "Method robust" in page and "confidence 0.99" in page and "1.25×" in page  # the test, from fams.attrs
    assert '<span class="st st-open">open</span>' in page and "https" in page  # port table with services
    assert "Linux/Unix-like" in page and "02:77:01:00:00:01" in page  # hosts: OS hint, MAC


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_self_contained(built: dict[str, Path], name: str) -> None:
    page = built[name].read_text(encoding="utf-8")
    for tag, attrs in tags_of(page):
        assert tag not in FORBIDDEN_TAGS, tag
        for key, value in attrs.items():
            assert not key.startswith("on"), (tag, key)
            if key in ("src", "href", "xlink:href"):
                assert value and value.startswith(("#", "data:")), (tag, key, value)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", page, re.IGNORECASE)
    assert "<script" not in page.lower()
    assert "default-src 'none'" in page  # the CSP that makes the browser refuse any fetch
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # unique across all the inline SVGs
    refs = set(re.findall(r'url\(#([^)]+)\)|href="#([^"]+)"', page))
    assert {a or b for a, b in refs} <= set(ids)  # every clip path, marker and link resolves


def test_capture_strings_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every address becomes a hostile string (as a decoder of another engine could hand us), and the
    capture's file name holds markup too: none of it may reach the page unescaped, tables or plots."""
    import analyzer.pipeline

    real_read = analyzer.pipeline.read_sources

    def hostile_read(found: object, **options: object) -> pd.DataFrame:
        packets = real_read(found, **options)
        for col in ("src", "dst", "q_src", "q_dst"):  # one category list: the same address, the same name
            cats = packets[col].cat.categories
            packets[col] = packets[col].cat.rename_categories([f"{HOSTILE}{i}" for i in range(len(cats))])
        return packets

    monkeypatch.setattr(analyzer.pipeline, "read_sources", hostile_read)
    capture = tmp_path / '<b onmouseover="x">&.pcap'
    shutil.copy(SAMPLES["nat_qscan"], capture)
    out = tmp_path / "hostile.html"
    report.write_report(str(capture), str(out))
    page = out.read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<img" not in page.lower() and "<b " not in page
    assert "&lt;script&gt;" in page  # the strings are there, as text
    assert "&lt;b onmouseover=&quot;x&quot;&gt;&amp;.pcap" in page
    for tag, attrs in tags_of(page):
        assert tag not in FORBIDDEN_TAGS and not any(k.startswith("on") for k in attrs), (tag, attrs)
    svgs = re.findall(r"<svg.*?</svg>", page, re.DOTALL)
    assert svgs and any("&lt;script&gt;" in s for s in svgs)  # plot titles and legends carry them, escaped
    assert page.count("<svg") == expected_plots(SAMPLES["nat_qscan"])


def test_empty_sections_say_so(tmp_path: Path) -> None:
    out = tmp_path / "empty.html"
    report.write_report(str(REPO / "tests" / "data" / "edge" / "header_only.pcap"), str(out))
    page = out.read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    for words in ("no hosts", "no scans found", "no port states", "no RTT families"):
        assert words in page
    assert "<svg" not in page


def test_no_scan_but_rtt(tmp_path: Path) -> None:
    """ICMP-quoted replies: no scan, yet the families section has a table (and says why there is no scan)."""
    out = tmp_path / "icmp.html"
    report.write_report(str(REPO / "tests" / "data" / "edge" / "icmp_quoted.pcap"), str(out))
    page = out.read_text(encoding="utf-8")
    assert "no scans found" in page and '<section id="families">' in page


def test_unreadable_capture_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "x.html"
    with pytest.raises(CaptureError):
        report.write_report(str(REPO / "tests" / "data" / "edge" / "not_a_capture.txt"), str(out))
    assert list(tmp_path.iterdir()) == []  # nor a temporary file


def test_unwritable_output_fails_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import analyzer.pipeline

    monkeypatch.setattr(analyzer.pipeline, "read_sources",
                        lambda *a, **k: pytest.fail("read before the output was known writable"))
    with pytest.raises(FileNotFoundError):
        report.write_report(str(SAMPLES["basic"]), str(tmp_path / "no" / "such" / "dir.html"))


def test_reader_warnings_reported(tmp_path: Path) -> None:
    out = tmp_path / "t.html"
    with pytest.warns(Warning, match="cut short"):
        report.write_report(str(REPO / "tests" / "data" / "edge" / "truncated.pcap"), str(out))
    assert "reader warnings" in out.read_text(encoding="utf-8")


def test_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report.write_report(str(SAMPLES["basic"]), str(tmp_path / "a.html"), progress=True)
    err = capsys.readouterr().err
    positions = [err.find(f"] {stage}") for stage in ("reading", "matching", "scans", "hosts", "families", "plotting")]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), err
    report.write_report(str(SAMPLES["basic"]), str(tmp_path / "b.html"), progress=False)
    assert capsys.readouterr().err == ""


def test_cli(tmp_path: Path) -> None:
    from analyzer.cli import main

    out = tmp_path / "cli.html"
    assert main(["report", str(SAMPLES["basic"]), "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert main(["report", str(REPO / "tests" / "data" / "edge" / "empty.pcap"), "-o", str(tmp_path / "e.html")]) == 2


def big_scan(path: Path, ports: int = 6000, open_ports: tuple[int, ...] = (22, 80, 443)) -> None:
    """A SYN scan of `ports` ports (RST from closed ones, SYN/ACK from open ones), written with dpkt."""
    import dpkt

    rng = np.random.default_rng(1)
    scanner, target = bytes([10, 9, 0, 2]), bytes([10, 9, 0, 1])
    mac_s, mac_t = b"\x02\x00\x00\x00\x00\x02", b"\x02\x00\x00\x00\x00\x01"
    t = 1_700_000_000.0
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f)
        for i, port in enumerate(rng.permutation(np.arange(1, ports + 1))):
            port, seq = int(port), 1000 + i
            syn = dpkt.tcp.TCP(sport=40000, dport=port, seq=seq, flags=dpkt.tcp.TH_SYN, win=1024)
            ip = dpkt.ip.IP(src=scanner, dst=target, p=6, ttl=int(rng.integers(37, 60)), id=int(rng.integers(65536)), data=syn)
            w.writepkt(bytes(dpkt.ethernet.Ethernet(src=mac_s, dst=mac_t, data=ip)), ts=t)
            flags = (dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK) if port in open_ports else (dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK)
            reply = dpkt.tcp.TCP(sport=port, dport=40000, seq=77, ack=seq + 1, flags=flags, win=0)
            ip = dpkt.ip.IP(src=target, dst=scanner, p=6, ttl=64, data=reply)
            w.writepkt(bytes(dpkt.ethernet.Ethernet(src=mac_t, dst=mac_s, data=ip)), ts=t + 50e-6 + 20e-6 * rng.random())
            t += 0.0004


def test_big_scan_is_subsampled_and_small(tmp_path: Path) -> None:
    capture, out = tmp_path / "big.pcap", tmp_path / "big.html"
    big_scan(capture)
    report.write_report(str(capture), str(out))
    page = out.read_text(encoding="utf-8")
    assert "5000 of 6000 probes shown" in page  # the walk plot says it subsampled
    assert "open (3)" in page  # ...yet kept every probe of the rare state
    assert "data:image/png;base64," in page  # dense layers rasterized inside the SVG
    assert "Not shown: 5,997 closed ports" in page  # the port table hides the common state, as nmap
    assert "<details>" in page  # the 6000-row RTT table is folded
    for svg in re.findall(r"<svg.*?</svg>", page, re.DOTALL):
        assert len(svg) < 400_000
    assert len(page) < 1_500_000


# ------------------------------------------------------------------------------------------ browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(args: list[str], page: Path) -> subprocess.CompletedProcess:
    """Headless chromium on a local file, isolated (fresh profile, no network services); stderr has its log."""
    if CHROMIUM is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="synlens-chromium-") as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args, page.resolve().as_uri()],
            check=False, capture_output=True, text=True, timeout=180)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line]


def test_browser_sees_console_errors(tmp_path: Path) -> None:
    """Negative control: a page that fails is caught by the check the report tests rely on."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p id="p">x</p><script>null.f()</script></body></html>')
    run = chromium(["--dump-dom"], bad)
    assert 'id="p"' in run.stdout
    assert any("Uncaught" in line for line in console_lines(run.stderr)), run.stderr


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_browser_renders_report(built: dict[str, Path], name: str) -> None:
    run = chromium(["--dump-dom"], built[name])
    assert run.returncode == 0, run.stderr[-2000:]
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in run.stdout, sid
    assert run.stdout.count("<svg") == built[name].read_text(encoding="utf-8").count("<svg")
    # no console message at all: no script error, and no resource the CSP had to refuse
    assert console_lines(run.stderr) == []


def test_browser_screenshot(built: dict[str, Path], tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    run = chromium([f"--screenshot={png}", "--window-size=1280,2000", "--hide-scrollbars"], built["nat_qscan"])
    assert run.returncode == 0 and png.exists(), run.stderr[-2000:]
    assert console_lines(run.stderr) == []
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 0.05  # not a blank page


def write_screenshot(target: Path) -> None:
    """Render the nat_qscan sample's report and save a PNG (< 300 KB) of its first 1280 x 2000 pixels."""
    import os

    from PIL import Image

    target = target.resolve()
    os.chdir(REPO)  # the report shows the capture's path as given: a relative one, not this machine's
    with tempfile.TemporaryDirectory() as tmp:
        page, png = Path(tmp) / "report.html", Path(tmp) / "shot.png"
        report.write_report(str(SAMPLES["nat_qscan"].relative_to(REPO)), str(page))
        run = chromium([f"--screenshot={png}", "--window-size=1280,2000", "--hide-scrollbars"], page)
        if run.returncode != 0 or not png.exists():
            raise SystemExit(run.stderr)
        image = Image.open(png).convert("RGB")
        image.save(target, optimize=True)
        if target.stat().st_size > 300_000:  # a palette keeps it small; 256 colours keep the plot colours true
            image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(target, optimize=True)
    print(f"wrote {target} ({target.stat().st_size:,} bytes)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--screenshot":
        write_screenshot(Path(sys.argv[2]))
    else:
        raise SystemExit(__doc__)


@pytest.mark.parametrize("capture", ["hw13-01__nmap.pcapng",
                                     pytest.param("ProbingDataset__nmap.pcapng", marks=pytest.mark.slow)])
def test_plots_count_what_the_tables_count(capture: str, tmp_path: Path) -> None:
    """Each scan's port-walk plot draws the probes the scans table counts for its phase, and its legend
    counts each state as the port table does: the report's figures and tables come from one result."""
    real = REALWORLD / capture
    if not real.exists():
        pytest.skip(f"real capture not found: {real}")
    out = tmp_path / "report.html"
    report.write_report(str(real), str(out))
    page = out.read_text(encoding="utf-8")
    packets = read(real)
    found, states = scans(packets, match(packets))
    walks = re.findall(r'<figure id="walk-(\d+)">(.*?)</figure>', page, re.DOTALL)
    assert len(walks) == min(found.loc[found["stage"] == "port scan", "phase"].nunique(), 12)
    for phase, body in walks:
        phase = int(phase)
        plotted = int(re.search(r"each of the phase&#x27;s ([\d,]+) probes", body).group(1).replace(",", ""))
        assert plotted == found.loc[found["phase"] == phase, "probes"].sum()
        legend = {name: int(n) for name, n in re.findall(r">([a-z|]+) \((\d+)\)<", body)}
        assert legend == states[states["phase"] == phase]["state"].value_counts().to_dict()
