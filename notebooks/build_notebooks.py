#!/usr/bin/env python3
"""Build the classroom notebooks from the lessons written below (so they are reviewed as code).

For each lesson it writes two notebooks, without outputs:

``notebooks/NN_name.ipynb``
    the lesson with its exercises as questions only: each exercise's code cell reads
    ``# Your answer here`` (after an optional hint), so a teacher can hand it out as it is;
``notebooks/solutions/NN_name.ipynb``
    the same lesson with every exercise answered: solution code cells start with
    ``# SOLUTION`` and carry the cell tag ``solution``, written answers start with ``**Answer``.

Run it after editing a lesson::

    python3 notebooks/build_notebooks.py            # (re)write the notebooks
    python3 notebooks/build_notebooks.py --check    # exit 1 if the notebooks on disk are stale

Lessons read the captures in ``sample_pcaps/`` (made by sample_pcaps/make_samples.py and
notebooks/make_lesson_captures.py) and use only the analyzer's Python API. The notebooks find the
repository from their working directory upwards, so they run from notebooks/ and notebooks/solutions/.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
SOLUTION_MARKER = "# SOLUTION"
ANSWER_MARKER = "**Answer"
PLACEHOLDER = "# Your answer here"


# ------------------------------------------------------------------------------------------------ model


@dataclass
class Exercise:
    label: str  # "1.2"
    question: str  # markdown
    solution: str  # code
    answer: str | None = None  # markdown: the written part of the answer
    hint: str | None = None  # a comment or two shown in the questions variant


@dataclass
class Lesson:
    number: int
    name: str
    title: str
    cells: list = field(default_factory=list)  # ("md", text) | ("code", src) | Exercise

    @property
    def filename(self) -> str:
        return f"{self.number:02d}_{self.name}.ipynb"

    def md(self, text: str) -> None:
        self.cells.append(("md", _clean(text)))

    def code(self, src: str) -> None:
        self.cells.append(("code", _clean(src)))

    def exercise(self, label: str, question: str, solution: str, *, answer: str | None = None,
                 hint: str | None = None) -> None:
        self.cells.append(Exercise(label, _clean(question), _clean(solution), answer and _clean(answer),
                                   hint and _clean(hint)))


def _clean(text: str) -> str:
    return dedent(text).strip("\n")


SETUP = '''
%matplotlib inline
import json
import sys
from pathlib import Path

# The repository: the first directory upwards from here holding sample_pcaps/ (this notebook may run
# from notebooks/ or from notebooks/solutions/).
ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "sample_pcaps").is_dir())
SAMPLES = ROOT / "sample_pcaps"
try:
    import analyzer
except ImportError:  # synlens not installed (pip install -e .): use the checkout
    sys.path.insert(0, str(ROOT))
    import analyzer

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 30)
pd.set_option("display.max_colwidth", 90)
plt.rcParams["figure.dpi"] = 90


def load_truth(name):
    """What the lab knows a capture holds (sample_pcaps/NAME.truth.json)."""
    return json.loads((SAMPLES / f"{name}.truth.json").read_text(encoding="utf-8"))
'''


def render(lesson: Lesson, solutions: bool) -> nbformat.NotebookNode:
    cells = []

    def add(cell, tags=()):
        cell["id"] = f"l{lesson.number}-{len(cells):03d}"
        if tags:
            cell["metadata"]["tags"] = list(tags)
        cells.append(cell)

    variant = ("**Solutions** — for teachers: every exercise is answered (cells tagged `solution`). "
               "Hand out the questions-only notebook in `notebooks/`."
               if solutions else
               "Exercises are marked **Exercise**; write your answer in the cell below each one "
               "(`# Your answer here`).")
    add(new_markdown_cell(f"# Lesson {lesson.number} — {lesson.title}\n\n{variant}"))
    add(new_code_cell(_clean(SETUP)), tags=("setup",))
    for item in lesson.cells:
        if isinstance(item, Exercise):
            add(new_markdown_cell(f"### Exercise {item.label}\n\n{item.question}"), tags=("exercise",))
            if solutions:
                add(new_code_cell(f"{SOLUTION_MARKER} {item.label}\n{item.solution}"), tags=("solution",))
                if item.answer:
                    add(new_markdown_cell(f"{ANSWER_MARKER} {item.label}.** {item.answer}"), tags=("solution",))
            else:
                hint = f"{item.hint}\n" if item.hint else ""
                add(new_code_cell(f"{hint}{PLACEHOLDER}"), tags=("answer",))
                if item.answer:
                    add(new_markdown_cell("*Your answer in words:*"), tags=("answer",))
        elif item[0] == "md":
            add(new_markdown_cell(item[1]))
        else:
            add(new_code_cell(item[1]))
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "synlens": {"lesson": lesson.number, "variant": "solutions" if solutions else "questions"},
    })
    nbformat.validate(nb)
    return nb


def build(outdir: Path = HERE) -> list[Path]:
    """Write every lesson's two notebooks under `outdir`; return their paths."""
    written = []
    for lesson in LESSONS:
        for solutions in (False, True):
            path = outdir / ("solutions" if solutions else "") / lesson.filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(serialize(render(lesson, solutions)), encoding="utf-8")
            written.append(path)
    return written


def serialize(nb: nbformat.NotebookNode) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


# ================================================================================================ lesson 1

L1 = Lesson(1, "rtt_families", "RTT families and the t-test")

L1.md('''
**What you will learn**

* what a port forward looks like in round-trip times (RTTs) — and in TTLs;
* the two-sample *t* tests behind port families: Student's pooled *t* (nmap's `qscan.nse`) and Yuen–Welch
  (synlens);
* why qscan's greedy, one-sided grouping with a hard-coded table of critical values misleads;
* what the confidence level and the number of probes per port do, by simulation.

**The capture.** `nat_qscan.pcap` was made in a namespace lab: a scanner (10.77.1.2) runs
`nmap -sS --script qscan --script-args qscan.numtrips=10` against a NAT gateway (10.77.1.1). The gateway answers
some ports itself and *forwards* others to a machine behind it, through a delay line of about 1 ms each way.
Which ports are which is for you to find.
''')
L1.md('''
## 1. From packets to RTT samples

`analyzer.read` turns the capture into a packets table (one row per packet); `analyzer.match` pairs each probe
with its reply. The RTT is the reply's timestamp minus the probe's (in ns); a retransmitted probe has no RTT
(Karn's rule: we cannot tell which copy was answered).
''')
L1.code('''
from scipy import stats

packets = analyzer.read(SAMPLES / "nat_qscan.pcap")
probes = analyzer.match(packets)
print(f"{len(packets)} packets, {len(probes)} probes")
probes[["ts_ns", "dst", "dport", "flags", "reply_kind", "reply_ttl", "rtt_ns"]].head(8)
''')
L1.md('''
`analyzer.rtt` summarises the samples per port (µs). Look at `mean_us` and `min_us`.
''')
L1.code('''
per_port = analyzer.rtt(probes)
per_port[["port", "sent", "received", "samples", "mean_us", "stddev_us", "min_us", "median_us"]]
''')
L1.code('''
answered = probes[probes["rtt_ns"].notna()].copy()
answered["rtt_us"] = answered["rtt_ns"].astype(float) / 1000
answered["ttl"] = answered["reply_ttl"].astype(float)
ports = sorted(answered["dport"].astype(int).unique())

fig, ax = plt.subplots(figsize=(8, 3.6))
rng = np.random.default_rng(0)
for i, port in enumerate(ports):
    r = answered[answered["dport"] == port]
    x = i + rng.uniform(-0.18, 0.18, len(r))
    ax.scatter(x, r["rtt_us"], s=16, c=np.where(r["ttl"] == 64, "tab:blue", "tab:red"))
ax.set_yscale("log")
ax.set_xticks(range(len(ports)), [str(p) for p in ports])
ax.set_xlabel("destination port")
ax.set_ylabel("RTT (µs, log scale)")
ax.set_title("RTT per probe — blue: reply TTL 64, red: other TTL")
plt.show()
''')
L1.md('''
Two bands, about thirty times apart. A reply that crosses the gateway to another machine and back pays the extra
path twice, and it has been routed once more, so its TTL is one lower. (Ports 25 and 139 have one sample each:
the first nmap SYN scan probes every port once, qscan then probes only some ports again.)
''')
L1.exercise("1.1", '''
For each answered port compute the median RTT (ms), the minimum RTT (ms) and the most common reply TTL.
Which ports are forwarded to another machine? Check your list against the lab's truth:
`load_truth("nat_qscan")["forwarded_ports"]`.
''', '''
summary = answered.groupby(answered["dport"].astype(int)).agg(
    median_ms=("rtt_us", lambda s: s.median() / 1000),
    min_ms=("rtt_us", lambda s: s.min() / 1000),
    ttl=("ttl", lambda s: int(s.mode().iloc[0])),
    samples=("rtt_us", "size"),
)
display(summary)
forwarded = sorted(summary.index[(summary["ttl"] < 64) & (summary["median_ms"] > 1)])
print("forwarded:", forwarded, " truth:", load_truth("nat_qscan")["forwarded_ports"])
''', answer='''
443, 3306 and 8080: median RTT about 2.1 ms against 0.06–0.08 ms, and TTL 63 against 64 (one more router
between the scanner and the machine that answers). Ports 22, 80 (open), 23, 25 (closed) and 139 (ICMP
admin-prohibited) are answered by the gateway itself.
''', hint="# Hint: answered.groupby(...).agg(...); the TTL's mode is s.mode().iloc[0]")
L1.exercise("1.2", '''
The lab's delay line adds 1 ms each way, 2 ms per round trip. Estimate that extra delay as the difference between
the forwarded and the local ports' *means*, *medians* and *minima*. Which estimate is closest to 2 ms? Why is a
path's delay best seen in the lower part of its RTT distribution?
''', '''
local = answered[~answered["dport"].isin([443, 3306, 8080])]["rtt_us"]
fwd = answered[answered["dport"].isin([443, 3306, 8080])]["rtt_us"]
for name, f in [("mean", np.mean), ("median", np.median), ("minimum", np.min)]:
    print(f"{name:8s} difference: {(f(fwd) - f(local)) / 1000:.3f} ms")
''', answer='''
All three are close to 2 ms here; the minima are usually the cleanest. An RTT is the path's fixed delay plus
non-negative queueing and scheduling delay, so the path shows in the floor of the distribution and the noise in
its upper tail. That is why synlens orders ports by their *floor* (the mean of the lower half of their log RTTs,
a reply timed absurdly fast first raised to the lowest plausible one: README, "--method robust") before it cuts
them into families.
''')

L1.md('''
## 2. Two-sample *t* tests

Are two ports' RTTs from one distribution? A two-sample *t* test compares their means relative to their spread.

* **Student's pooled *t*** (what qscan uses) assumes both ports vary equally:
  $t = \\dfrac{\\bar x_1 - \\bar x_2}{s_p\\sqrt{1/n_1 + 1/n_2}}$, with
  $s_p^2 = \\dfrac{(n_1-1)s_1^2 + (n_2-1)s_2^2}{n_1+n_2-2}$ and $n_1+n_2-2$ degrees of freedom.
* **Welch's *t*** lets each port have its own variance (forwarded ports usually vary more).
* **Yuen's trimmed *t*** (synlens, on log RTT) also cuts 10 % of each sample's ends, so that one delayed reply
  among ten cannot move a port.

The analyzer gives both: `analyzer.pooled_t` and `analyzer.yuen_welch`; they agree with scipy's `ttest_ind`.
''')
L1.code('''
from analyzer.analysis.stats import rtt_samples

samples = {port: s for (target, proto, port), s in rtt_samples(probes).items()}   # µs, per port
a, b = samples[22], samples[23]
rows = {
    "analyzer.pooled_t (qscan's test)": analyzer.pooled_t(a, b),
    "scipy ttest_ind(equal_var=True)": stats.ttest_ind(a, b, equal_var=True),
    "analyzer.yuen_welch, log RTT": analyzer.yuen_welch(np.log(a), np.log(b)),
    "scipy ttest_ind(Welch, trim=0.1), log": stats.ttest_ind(np.log(a), np.log(b), equal_var=False, trim=0.1),
}
pd.DataFrame({name: {"t": r.statistic, "p (two-sided)": r.pvalue} for name, r in rows.items()}).T
''')
L1.md('''
**qscan's decision rule.** qscan puts two ports in one family when $|t|$ is below `tinv(C, dof)`, the *one-sided*
quantile of the *t* distribution at its confidence $C$ (default 0.95). Comparing $|t|$ with a one-sided quantile is
a two-sided test at $\\alpha = 2(1-C)$: qscan's "95 %" rejects a true "same machine" one time in **ten** for every
pair it tests.
''')
L1.code('''
dof = 18  # two ports with 10 RTT samples each
x = np.linspace(-4, 4, 400)
q_one, q_two = stats.t.ppf(0.95, dof), stats.t.ppf(0.975, dof)
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(x, stats.t.pdf(x, dof), color="black")
ax.fill_between(x, stats.t.pdf(x, dof), where=np.abs(x) > q_one, color="tab:red", alpha=0.5,
                label=f"qscan splits: |t| > {q_one:.3f}  (α = {2 * stats.t.sf(q_one, dof):.2f})")
ax.fill_between(x, stats.t.pdf(x, dof), where=np.abs(x) > q_two, color="tab:blue", alpha=0.6,
                label=f"two-sided 5 %: |t| > {q_two:.3f}")
ax.set_title(f"t distribution, {dof} degrees of freedom")
ax.legend(loc="upper left", fontsize=8)
plt.show()
''')
L1.exercise("2.1", '''
Compute the pooled *t* statistic of ports 22 and 23 yourself from the formula above (numpy only: `np.mean`,
`np.var(..., ddof=1)`), and check it against `analyzer.pooled_t`. Then decide, with `stats.t.ppf`: does qscan
(confidence 0.95) put 22 and 23 in one family? Would a two-sided test at α = 0.05? At α = 0.01?
''', '''
a, b = samples[22], samples[23]
n1, n2 = len(a), len(b)
sp2 = ((n1 - 1) * np.var(a, ddof=1) + (n2 - 1) * np.var(b, ddof=1)) / (n1 + n2 - 2)
t = (np.mean(a) - np.mean(b)) / np.sqrt(sp2 * (1 / n1 + 1 / n2))
dof = n1 + n2 - 2
print(f"t = {t:.4f}  (analyzer.pooled_t: {analyzer.pooled_t(a, b).statistic:.4f}), dof = {dof}")
for name, crit in [("qscan, C = 0.95", stats.t.ppf(0.95, dof)),
                   ("two-sided α = 0.05", stats.t.ppf(0.975, dof)),
                   ("two-sided α = 0.01", stats.t.ppf(0.995, dof))]:
    print(f"{name:20s} critical {crit:.3f}: {'same family' if abs(t) < crit else 'SPLIT'}")
''', answer='''
The statistic lies between qscan's critical value and the stricter ones, so qscan splits ports 22 and 23
although one kernel answers both. A closed port's RST leaves the kernel a little sooner and more regularly than
an open port's SYN/ACK: the difference is real, a few µs, but it is not another machine. A test only says
"the means differ"; whether the difference *matters* is a separate question (synlens asks it with its margins,
section 5).
''')

L1.md('''
## 3. Families: qscan's greedy grouping against synlens's robust one

qscan takes the ports **in port order**; each port not yet placed opens a family and absorbs every later unplaced
port whose pooled $|t|$ is below the critical value. synlens (`method="robust"`, the default) compares ports only
within the trips that probed them together, testing all of a target's ports at once (a rank test within each trip:
Skillings–Mack's, Friedman's when no probe was lost), cuts them where the floors are furthest apart, and tests each
part again; it spends α over the whole target, refuses cuts smaller than 1.25× and 30 µs, and calls a port
untestable when fewer than five trips sampled it with the others.

`analyzer.families` runs either; `method="qscan"` uses scipy's exact quantiles, `method="qscan-table"` qscan's
own table.
''')
L1.code('''
fams = {m: analyzer.families(probes, method=m) for m in ("robust", "qscan", "qscan-table")}
table = fams["robust"][["port", "samples", "median_us", "family_kind"]].copy()
for m, f in fams.items():
    table[f"family ({m})"] = f["family"].to_numpy()
table
''')
L1.md('''
nmap itself ran qscan on this scan, with its own timestamps; its verdict is in the XML it wrote:
''')
L1.code('''
import xml.etree.ElementTree as ET

out = ET.parse(SAMPLES / "nat_qscan.nmap.xml").find(".//script[@id='qscan']").get("output")
print(out)
nmap_families = {}
for line in out.strip().splitlines()[1:]:
    port, family = line.split()[:2]
    nmap_families.setdefault(int(family), []).append(int(port))
print("nmap's qscan families:", list(nmap_families.values()))
print("the lab's machines:   ", load_truth("nat_qscan")["families"])
''')
L1.md('''
qscan reports more families than there are machines: every extra family is a false claim that another machine
answers. Three things add up:

1. **Each pair is tested at α = 0.10** (the one-sided quantile), and a target with *k* ports gets up to
   $k(k-1)/2$ tests with no correction for multiplicity.
2. **Pooled variance, raw RTT**: a port with tight RTTs next to a noisier one makes *t* large.
3. **Greedy, order-dependent grouping**: which port opens a family decides who joins it; a port between two others
   can bridge them or not, depending on the port numbers.

The third is easiest to see on three made-up ports whose means are 100, 106 and 112 µs with the same spread:
neighbours are alike, the extremes are not.
''')
L1.code('''
from analyzer.analysis.families import group_qscan, group_robust

z = np.array([-1.6, -1.1, -0.7, -0.3, -0.1, 0.1, 0.3, 0.7, 1.1, 1.6])
z = (z - z.mean()) / z.std(ddof=1)           # mean 0, standard deviation 1 exactly
abc = {"A": 100 + 10 * z, "B": 106 + 10 * z, "C": 112 + 10 * z}
for x, y in [("A", "B"), ("B", "C"), ("A", "C")]:
    print(f"{x}-{y}: pooled t = {analyzer.pooled_t(abc[x], abc[y]).statistic:+.2f}"
          f"   (qscan splits when |t| > {stats.t.ppf(0.95, 18):.2f})")
print("qscan, order A B C:", group_qscan([abc["A"], abc["B"], abc["C"]]))
''')
L1.exercise("3.1", '''
qscan visits ports in port-number order, so the order of `A`, `B`, `C` is the order of their port numbers. Run
`group_qscan` on all six orders (`itertools.permutations`) and write down the families each gives. Then do the
same with `group_robust`. Which answers depend on the order?
''', '''
from itertools import permutations

for order in permutations("ABC"):
    q = group_qscan([abc[p] for p in order])
    r = group_robust([abc[p] for p in order])
    fq = sorted("".join(sorted(p for p, f in zip(order, q) if f == k)) for k in set(q))
    fr = sorted("".join(sorted(p for p, f in zip(order, r) if f == k)) for k in set(r))
    print(" ".join(order), " qscan:", fq, "  robust:", fr)
''', answer='''
qscan gives `{A,B},{C}` when A comes first, `{B,C},{A}` when C comes first, and one family `{A,B,C}` when B
(the middle port) comes first: three answers from one set of data. The robust method gives one family whatever
the order (here because 112/100 is below its 1.25× margin; in general because its cuts depend on the data only).
''', hint="# Hint: from itertools import permutations")

L1.md('''
## 4. qscan's table of critical values

qscan does not compute `tinv`; it looks the value up in a table (rows: degrees of freedom 1–20, 25, 30, …, 100;
columns: seven confidence levels). `analyzer.analysis.families.qscan_table_quantile` reproduces that lookup,
including the rows it uses between the table's rows. Compare it with scipy's exact quantiles:
''')
L1.code('''
from analyzer.analysis.families import qscan_table_quantile

levels = [0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995]      # qscan's confidence levels
dofs = np.arange(1, 101)
qtable = np.array([[qscan_table_quantile(c, int(d)) for c in levels] for d in dofs])
exact = stats.t.ppf(np.array(levels)[None, :], dofs[:, None])
rel = qtable / exact - 1

fig, ax = plt.subplots(figsize=(8, 3.6))
im = ax.imshow(rel.T * 100, aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3,
               extent=(0.5, 100.5, len(levels) - 0.5, -0.5))
ax.set_yticks(range(len(levels)), [str(c) for c in levels])
ax.set_xlabel("degrees of freedom (n1 + n2 - 2)")
ax.set_ylabel("confidence")
fig.colorbar(im, label="table / exact - 1 (%)")
ax.set_title("qscan's table against scipy.stats.t.ppf (colour clipped at ±3 %)")
plt.show()
''')
L1.md('''
Two kinds of error show: stripes where qscan reads a row for *fewer* degrees of freedom than it has (21–24 read
the row for 20, 26–29 the row for 25, …: slightly too large, so slightly too few splits), and isolated cells that
are simply wrong — typos in the table.
''')
L1.exercise("4.1", '''
Find the typos: the cells on the table's own rows (dof 1–20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 90, 100) that
differ from scipy by more than rounding (say 0.001). For each, give the number of probes per port (`numtrips`,
no loss) at which qscan reads it — two ports with *n* samples each give $2n-2$ degrees of freedom — and say
whether the error makes qscan split ports more often or less often.
''', '''
rows = [*range(1, 21), 25, 30, 35, 40, 45, 50, 60, 70, 80, 90, 100]
wrong = []
for d in rows:
    for c in levels:
        got, want = qscan_table_quantile(c, d), stats.t.ppf(c, d)
        if abs(got - want) > 1e-3:
            wrong.append({"dof": d, "confidence": c, "table": got, "exact": round(want, 4),
                          "numtrips": (d + 2) // 2 if d % 2 == 0 else "odd: only with a lost reply",
                          "effect": "more splits" if got < want else "fewer splits"})
pd.DataFrame(wrong)
''', answer='''
Four cells: (dof 4, 0.99) 3.7649 for 3.7469; (dof 8, 0.975) 3.3060 for 2.3060; (dof 10, 0.995) 1.1693 for 3.1693;
(dof 13, 0.99) 2.6403 for 2.6503. A value that is too small makes qscan split more (the worst: 1.1693 at 6
probes per port and confidence 0.995 — the user asked for *more* caution and gets far less); too large, fewer.
Rows 4, 8 and 10 are reached with 3, 5 and 6 probes per port; row 13 needs an odd total, i.e. a lost reply.
''')
L1.exercise("4.2", '''
How much does the worst typo matter? Simulate 300 targets whose 8 ports all belong to one machine, each probed
6 times (`numtrips=6`, so 10 degrees of freedom per pair), RTT = 80 µs + a lognormal delay of median 60 µs and
σ = 0.6 (`80 + rng.lognormal(np.log(60), 0.6, 6)`). At confidence 0.995, in what fraction of targets does qscan split the machine
with its table (`group_qscan(s, 0.995, table=True)`), and with scipy's quantile (`table=False`)?
''', '''
rng = np.random.default_rng(42)
split = {"table": 0, "scipy": 0}
for _ in range(300):
    s = [80 + rng.lognormal(np.log(60), 0.6, 6) for _ in range(8)]
    split["table"] += len(set(group_qscan(s, 0.995, table=True))) > 1
    split["scipy"] += len(set(group_qscan(s, 0.995, table=False))) > 1
print({k: v / 300 for k, v in split.items()})
''', answer='''
With the typo most targets are split (critical value 1.17 instead of 3.17); with the exact quantile only a
few per cent are. Asking qscan for 99.5 % confidence with 6 probes per port gives the worst answer of all.
''')

L1.md('''
## 5. Simulation: what confidence and sample size do

The tests in `tests/test_families.py` use a model of the namespace lab: RTT = 80 µs plus a lognormal delay
(median 60 µs, σ = 0.6), 8 ports per target. Two cases:

* **all alike** — one machine: the right answer is one family; anything else is a *false split*;
* **three slow ports** — ports 1, 4 and 6 answer 1.6× slower (another machine): the right answer is exactly those
  two families.

We count how often each method gives exactly the right families, over 200 simulated targets.
''')
L1.code('''
def lab_like(rng, k=8, n=10, slow=(), factor=1.6):
    """k ports, n RTT samples each (µs); the ports in `slow` answer `factor` times slower."""
    out = [80 + rng.lognormal(np.log(60), 0.6, n) for _ in range(k)]
    return [s * factor if i in slow else s for i, s in enumerate(out)]


def same_partition(labels, truth):
    labels, truth = np.asarray(labels), np.asarray(truth)
    return bool(np.array_equal(labels[:, None] == labels[None, :], truth[:, None] == truth[None, :]))


def success(method, confidence, n=10, slow=(), k=8, factor=1.6, targets=200, seed=2026):
    """Fraction of simulated targets whose families come out exactly right."""
    rng = np.random.default_rng(seed)
    truth = [int(i in slow) for i in range(k)]
    group = group_qscan if method == "qscan" else group_robust
    hits = sum(same_partition(group(lab_like(rng, k, n, slow, factor), confidence), truth) for _ in range(targets))
    return hits / targets


SLOW = (1, 4, 6)
print("one machine, qscan 0.95: ", success("qscan", 0.95), "  robust 0.99:", success("robust", 0.99))
print("3 slow ports, qscan 0.95:", success("qscan", 0.95, slow=SLOW), "  robust 0.99:",
      success("robust", 0.99, slow=SLOW))
''')
L1.md('''
**Confidence.** Raising qscan's confidence cuts its false splits, but the same threshold then misses the slow
ports; the robust method keeps one machine together at every level.
''')
L1.code('''
confidences = [0.9, 0.95, 0.99, 0.999]
conf_rows = [{"confidence": c, "method": m, "case": case, "right": success(m, c, slow=slow)}
             for c in confidences for m in ("qscan", "robust")
             for case, slow in (("one machine", ()), ("3 slow ports", SLOW))]
conf_df = pd.DataFrame(conf_rows)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
for ax, case in zip(axes, ("one machine", "3 slow ports")):
    for m, style in (("qscan", "o-"), ("robust", "s-")):
        d = conf_df[(conf_df["case"] == case) & (conf_df["method"] == m)]
        ax.plot(d["confidence"].astype(str), d["right"], style, label=m)
    ax.set_title(case)
    ax.set_xlabel("confidence")
axes[0].set_ylabel("targets with exactly the right families")
axes[0].legend()
plt.show()
conf_df.pivot_table(index="confidence", columns=["case", "method"], values="right")
''')
L1.md('''
**Sample size.** More probes per port (`numtrips`) give each test more power — but qscan's false-split rate does
not fall, because every pairwise test still rejects a true "same machine" at its fixed α. The robust method gets
both right once it has enough samples.
''')
L1.code('''
trips = [3, 5, 10, 20, 40]
n_rows = [{"numtrips": n, "method": m, "case": case,
           "right": success(m, 0.95 if m == "qscan" else 0.99, n=n, slow=slow)}
          for n in trips for m in ("qscan", "robust")
          for case, slow in (("one machine", ()), ("3 slow ports", SLOW))]
n_df = pd.DataFrame(n_rows)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
for ax, case in zip(axes, ("one machine", "3 slow ports")):
    for m, style in (("qscan", "o-"), ("robust", "s-")):
        d = n_df[(n_df["case"] == case) & (n_df["method"] == m)]
        ax.plot(d["numtrips"].astype(str), d["right"], style, label=f"{m} ({'0.95' if m == 'qscan' else '0.99'})")
    ax.set_title(case)
    ax.set_xlabel("probes per port")
axes[0].set_ylabel("targets with exactly the right families")
axes[0].legend()
plt.show()
n_df.pivot_table(index="numtrips", columns=["case", "method"], values="right")
''')
L1.exercise("5.1", '''
Keep one machine (no slow ports) and vary the number of ports: *k* = 2, 4, 8, 16. How often does qscan (0.95)
split the machine, and how often does the robust method (0.99)? Explain qscan's value for *k* = 2, and why it
grows with *k*.
''', '''
for k in (2, 4, 8, 16):
    print(f"k = {k:2d}: false splits  qscan {1 - success('qscan', 0.95, k=k, targets=400):.3f}"
          f"   robust {1 - success('robust', 0.99, k=k, targets=400):.3f}")
# the same single test on normally distributed RTTs, the t test's own assumption
rng = np.random.default_rng(2)
normal = np.mean([len(set(group_qscan([rng.normal(100, 10, 10), rng.normal(100, 10, 10)], 0.95))) > 1
                  for _ in range(10000)])
print(f"k =  2, normal RTTs: qscan false splits {normal:.3f}")
''', answer='''
For two ports qscan makes one test, at α = 2(1 − 0.95) = 0.10: 10 % false splits on normally distributed RTTs,
a little less on these skewed ones (the *t* test is slightly conservative there) — not the 5 % its "95 %"
suggests. With more ports it makes more tests, each with a 10 % chance of a false split, and one is
enough; the rate climbs steadily with *k*. The robust method spends its α = 0.01 over the whole target, so its
false-split rate stays at or below 1 % whatever *k* is.
''', hint="# Hint: success('qscan', 0.95, k=k) is the fraction kept right; a false split is 1 minus that")
L1.exercise("5.2", '''
Could a higher confidence rescue qscan? Find the smallest of qscan's levels (0.95, 0.99, 0.995, 0.999, 0.9995)
at which qscan keeps 8 alike ports together in at least 95 % of targets. At that level, how often does it still
find the three slow ports (10 probes per port)? Compare with the robust method at 0.99.
''', '''
for c in (0.95, 0.99, 0.995, 0.999, 0.9995):
    together = success("qscan", c)
    if together >= 0.95:
        print(f"qscan at {c}: one machine kept together {together:.2f}, "
              f"3 slow ports found {success('qscan', c, slow=SLOW):.2f}")
        break
    print(f"qscan at {c}: one machine kept together only {together:.2f}")
print(f"robust at 0.99: together {success('robust', 0.99):.2f}, slow found {success('robust', 0.99, slow=SLOW):.2f}")
''', answer='''
qscan needs a very high confidence before it stops splitting one machine, and at that level its pairwise tests
are too weak to find the slow ports reliably: it trades false splits for missed machines. The robust method
gets both right because one omnibus test over all ports pools their samples (more power), and it controls the
error over the whole target rather than per pair.
''')
L1.exercise("5.3", '''
Make the slow ports only 1.15× slower and give each port 40 probes (`factor=1.15, n=40`). How often does each
method report exactly two families, and how often one family? Is the robust method's answer a failure? (Read
README.md, "Methods", on margins.)
''', '''
rng = np.random.default_rng(7)
counts = {"qscan": {}, "robust": {}}
for _ in range(200):
    s = lab_like(rng, n=40, slow=SLOW, factor=1.15)
    for m, labels in (("qscan", group_qscan(s, 0.95)), ("robust", group_robust(s, 0.99))):
        nf = len(set(labels))
        counts[m][nf] = counts[m].get(nf, 0) + 1
pd.DataFrame(counts).fillna(0).astype(int).sort_index().rename_axis("families found")
''', answer='''
The robust method reports one family every time: a cut must clear its equivalence margins (floors at least
1.25× and 30 µs apart), because in the lab one machine's ports drift by up to ~1.5× at tens of µs over a scan.
A 15 % difference is treated as "one path" by design — that is a decision, not a failure; lower
`min_ratio`/`min_diff_us` in `analyzer.families` for quiet networks. qscan, with 40 samples per port, has the power
to see a 15 % shift and usually reports two families (sometimes more): statistically right, but whether 15 % means
another machine is not a statistical question. On a real network, one machine's ports differ that much.
''')

L1.md('''
## 6. Time is not the only witness

A forwarded port's replies come from another IP stack, usually one hop further away. `analyzer.signal_families`
groups ports by every signal a reply carries (TTL, RTT, TCP stack, TCP timestamp clock, IP ID) and says which one
decided each split — and which signals this capture cannot offer.
''')
L1.code('''
ports_sig, fam_sig = analyzer.signal_families(packets, probes)
# rtt_family: from RTTs alone (analyzer.families); family: from every signal; deciding_signal: what set it apart
display(ports_sig[["port", "median_us", "ttl", "window", "options", "rtt_family", "family", "deciding_signal"]])
for row in fam_sig.itertuples():
    print(f"family {row.family} {row.ports}: {row.kind}; evidence: {row.evidence}")
print("unavailable here:", *fam_sig["unavailable"].iloc[0], sep="\\n  ")
''')
L1.md('''
## Takeaways

* A forwarded port shows as a second, slower RTT band with a lower TTL.
* qscan's "95 %" is α = 0.10 per pair, with many pairs, a pooled variance and a greedy, port-order-dependent
  grouping: false families are the rule, not the exception. Its hard-coded table adds four wrong cells.
* More probes do not cure per-pair false splits; a higher confidence trades them for missed machines.
* A test says whether means differ, not whether the difference means another machine: synlens adds equivalence
  margins for that, and other signals (TTL, stack) as independent witnesses.
''')


# ================================================================================================ lesson 2

L2 = Lesson(2, "reading_scans", "Reading scans: from flags and replies to techniques and port states")

L2.md("""
**What you will learn**

* how each of nmap's scan techniques — SYN, connect, FIN, NULL, Xmas, ACK and UDP — looks on the wire;
* how a Linux host answers each probe, depending on the port and on the firewall in front of it;
* how the replies (or their absence) become port states: open, closed, filtered, open|filtered, unfiltered;
* how to tell a tool by its probes.

**The lab.** Every capture here was made in one namespace lab (`tests/support/scanlab.py`; the commands are in each
capture's `.truth.json`). The scanner 10.77.40.1 scans the target 10.77.40.2, which is configured like this:

| port | TCP | UDP |
|---|---|---|
| 22, 443 | open (a service sends a short banner) | — |
| 80 | open (HTTP server) | — |
| 23, 25 | closed (the kernel answers RST) | — |
| 135 | firewall **drops** | — |
| 139 | firewall **rejects** (ICMP admin-prohibited) | firewall rejects |
| 53, 161 | — | open (a server answers) |
| 162, 514 | — | closed (ICMP port unreachable) |
| 137 | — | firewall drops |

So you know the answer; the point is to see how each technique reads it off the wire — and where it cannot.
""")
L2.code("""
from analyzer.protocols import flag_text

SCANNER, TARGET = "10.77.40.1", "10.77.40.2"
CAPTURES = {"SYN": "scans_syn", "CONNECT": "scans_connect", "FIN": "scans_fin", "NULL": "scans_null",
            "XMAS": "scans_xmas", "ACK": "scans_ack", "UDP": "scans_udp"}


def load(name):
    packets = analyzer.read(SAMPLES / f"{name}.pcap")
    probes = analyzer.match(packets)
    found, states = analyzer.scans(packets, probes)
    return {"packets": packets, "probes": probes, "scans": found, "states": states, "truth": load_truth(name)}


data = {technique: load(name) for technique, name in CAPTURES.items()}
pd.DataFrame([{"technique": t, "capture": CAPTURES[t] + ".pcap", "packets": len(d["packets"]),
               "command": d["truth"]["commands"][0]} for t, d in data.items()])
""")
L2.md("""
A small helper prints the conversation about one port as tcpdump would, briefly: every packet to or from the
port, and the ICMP errors that quote it.
""")
L2.code("""
ICMP_NAMES = {(3, 3): "port unreachable", (3, 13): "admin prohibited", (3, 2): "protocol unreachable",
              (3, 1): "host unreachable", (0, 0): "echo reply", (8, 0): "echo request"}


def describe(row):
    proto = row["ip_proto"]
    if pd.isna(proto):
        return "ARP " + ("who-has" if row["arp_op"] == 1 else "is-at")
    if proto == 6:
        text = f"TCP {flag_text(int(row['tcp_flags'])) or '(no flags)'} win {int(row['window'])}"
        return text + (f", {int(row['payload_len'])} bytes data" if row["payload_len"] else "")
    if proto == 17:
        return f"UDP {int(row['payload_len'])} bytes"
    if proto == 1:
        t, c = int(row["icmp_type"]), int(row["icmp_code"])
        quoted = f" (quotes port {int(row['q_dport'])})" if pd.notna(row["q_dport"]) else ""
        return f"ICMP {t}/{c} {ICMP_NAMES.get((t, c), '')}{quoted}"
    return f"IP protocol {int(proto)}"


def dialogue(packets, port, target=TARGET):
    \"\"\"Every packet to or from `port` of `target`, and the ICMP errors the target sent about it.\"\"\"
    p = packets
    about = (((p["dport"] == port) & (p["dst"] == target)) | ((p["sport"] == port) & (p["src"] == target))
             | ((p["q_dport"] == port) & (p["src"] == target)))
    rows = p[about.fillna(False).astype(bool)]
    t0 = packets["ts_ns"].min()
    return pd.DataFrame({
        "ms": ((rows["ts_ns"] - t0) / 1e6).round(3).to_numpy(),
        "direction": np.where(rows["src"].astype(str) == target, "target → scanner", "scanner → target"),
        "ttl": rows["ttl"].to_numpy(),
        "packet": [describe(r) for _, r in rows.iterrows()],
    })


def states_of(technique):
    \"\"\"The analyzer's port states for one capture, next to nmap's own verdict (from the truth file).\"\"\"
    st = data[technique]["states"][["port", "protocol", "type", "state", "reason", "probes"]].copy()
    nmap = {(p["protocol"], p["port"]): p["state"] for s in data[technique]["truth"]["scans"] for p in s["ports"]}
    st["nmap_says"] = [nmap.get((pr, int(po))) for pr, po in zip(st["protocol"], st["port"])]
    return st.reset_index(drop=True)
""")

L2.md("""
## 1. TCP flags, and how a host answers

A TCP header carries eight flag bits: FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20, ECE 0x40,
CWR 0x80. nmap and tcpdump print them as letters (`flag_text`).

What a stack following RFC 793 / 9293 (Linux does) does with a segment that belongs to no connection:

| probe | open port | closed port | firewall drops | firewall rejects |
|---|---|---|---|---|
| SYN | SYN/ACK | RST/ACK | nothing | ICMP 3/13 |
| FIN, NULL (no flags), Xmas (FIN PSH URG) | nothing (silently discarded) | RST/ACK | nothing | ICMP 3/13 |
| ACK | RST | RST | nothing | ICMP 3/13 |
| UDP datagram | the service's answer, if it answers this payload | ICMP 3/3 port unreachable | nothing | ICMP 3/13 |

Every scan technique is a choice of probe from this table; the port state is what the reply lets you conclude.
""")
L2.code("""
for value in (0x02, 0x12, 0x14, 0x04, 0x01, 0x00, 0x29, 0x10, 0x11):
    print(f"0x{value:02x} -> {flag_text(value) or '(none: a NULL probe)'}")
""")

L2.md("""
## 2. SYN scan (`nmap -sS`): half-open

nmap sends a SYN from a raw socket. An open port answers SYN/ACK, a closed one RST/ACK; silence or an ICMP
error means a firewall. Since no socket of the scanner's own kernel expects the SYN/ACK, *the kernel* answers it
with a RST: the connection is never completed ("half-open").
""")
L2.code("""
syn = data["SYN"]["packets"]
for port in (22, 23, 135, 139):
    print(f"port {port}")
    display(dialogue(syn, port))
""")
L2.md("""
`analyzer.scans` returns two tables: the scans (one row per phase and target) and each probed port's state
with the reply it rests on. Next to it, nmap's own verdict from the XML it wrote during the run:
""")
L2.code("""
display(data["SYN"]["scans"][["scanner", "target", "type", "flags", "probes", "ports_probed", "shape", "tool"]])
states_of("SYN")
""")
L2.exercise("2.1", """
Write the SYN-scan rule yourself: a function `syn_state(reply_kind, icmp_type, icmp_code)` that returns `"open"`,
`"closed"` or `"filtered"`, using the probes table (`data["SYN"]["probes"]`, columns `reply_kind`,
`reply_icmp_type`, `reply_icmp_code`; `reply_kind` is NaN when nothing came back). A port probed twice is
decided by any answer it got. Compare your states with the analyzer's and with nmap's.
""", """
def syn_state(kind, icmp_type, icmp_code):
    if kind == "syn-ack":
        return "open"
    if kind == "rst":
        return "closed"
    return "filtered"   # an ICMP unreachable (a firewall rejects) or nothing at all (it drops)


pr = data["SYN"]["probes"]
mine = {}
for port, g in pr.groupby(pr["dport"].astype(int)):
    answered = g[g["reply_kind"].notna()]
    row = answered.iloc[0] if len(answered) else g.iloc[0]
    kind = None if pd.isna(row["reply_kind"]) else row["reply_kind"]
    mine[port] = syn_state(kind, row["reply_icmp_type"], row["reply_icmp_code"])
check = states_of("SYN").set_index("port")[["state", "nmap_says"]]
check["mine"] = pd.Series(mine)
display(check)
print("all agree:", bool((check["mine"] == check["state"]).all() and (check["state"] == check["nmap_says"]).all()))
""", hint="# Hint: pr = data['SYN']['probes']; group by port with pr.groupby(pr['dport'].astype(int))")

L2.md("""
## 3. Connect scan (`nmap -sT`): the kernel's own handshakes

Without raw-socket privileges nmap calls `connect()`: the scanner's kernel sends the SYN and completes the
handshake on open ports. Compare port 22 in both captures.
""")
L2.code("""
print("SYN scan, port 22")
display(dialogue(data["SYN"]["packets"], 22))
print("connect scan, port 22")
display(dialogue(data["CONNECT"]["packets"], 22))
data["CONNECT"]["scans"][["type", "flags", "probes", "tool", "tool_evidence"]]
""")
L2.md("""
The connect scan completed the handshake (the scanner's ACK), so the service on port 22 had time to send its
banner before nmap tore the connection down with a RST. Both scans send SYNs; the analyzer tells them apart by
the completed handshakes, and it names no tool for a connect scan: its probes are the kernel's own.
""")
L2.exercise("2.2", """
Compare the probes of the two scans: for the SYN probes of each capture, list the TTL, the TCP window, the MSS
and the source ports (packets table: columns `ttl`, `window`, `mss`, `sport`; SYNs have `tcp_flags == 0x02`).
Which of these fields give away that nmap crafted the SYN scan's packets itself? Then count, in each capture,
what the scanner sent right after each SYN/ACK.
""", """
for technique in ("SYN", "CONNECT"):
    p = data[technique]["packets"]
    syns = p[(p["tcp_flags"] == 0x02).fillna(False).astype(bool) & (p["src"] == SCANNER)]
    values = {c: sorted(int(v) for v in syns[c].dropna().unique()) for c in ("ttl", "window", "mss")}
    print(f"{technique}: TTLs {values['ttl']}, windows {values['window']}, MSS {values['mss']},"
          f" {syns['sport'].nunique()} source port(s) for {len(syns)} SYNs")
    p = p.reset_index(drop=True)
    after = []
    for i in p.index[(p["tcp_flags"] == 0x12).fillna(False).astype(bool)]:
        nxt = p.iloc[i + 1:]
        nxt = nxt[(nxt["src"] == SCANNER) & (nxt["dport"] == p.loc[i, "sport"]).fillna(False).astype(bool)]
        after.append(flag_text(int(nxt["tcp_flags"].iloc[0])) if len(nxt) else "nothing")
    print(f"   after each SYN/ACK the scanner sent: {pd.Series(after).value_counts().to_dict()}")
""", answer="""
nmap's raw SYNs carry a random TTL between 37 and 59 (a kernel uses one fixed initial TTL, 64 on Linux), a small
window (1024) and only an MSS option, and they come from one source port (nmap moves to another for its
retries). The connect scan's SYNs are the
kernel's: TTL 64, window 64240, a full option list, a fresh source port per connection. After a SYN/ACK the SYN
scan's kernel answers R (it knows no such connection); the connect scan completes the handshake with A and
closes later with RST/ACK.
""")

L2.md("""
## 4. FIN, NULL and Xmas scans: silence means open

These probes carry no SYN. RFC 793 says a closed port answers any such segment with RST, while an open port
silently drops it. So a RST means *closed* — but silence is ambiguous: the port may be open, or a firewall may
have eaten the probe. nmap says **open|filtered**.
""")
L2.code("""
for technique in ("FIN", "NULL", "XMAS"):
    pr = data[technique]["probes"]
    print(f"{technique}: probe flags {sorted({flag_text(int(f)) or '(none)' for f in pr['flags'].dropna()})}")
print("FIN scan, ports 22 (open) and 23 (closed)")
display(dialogue(data["FIN"]["packets"], 22))
display(dialogue(data["FIN"]["packets"], 23))
fin_states = pd.concat([states_of(t).set_index("port")["state"].rename(t) for t in ("FIN", "NULL", "XMAS")], axis=1)
fin_states
""")
L2.exercise("2.3", """
The three scans agree port for port. Which ports do they leave ambiguous, and why can no FIN/NULL/Xmas scan ever
say "open"? Combine the FIN scan's states with the SYN scan's (`states_of("SYN")`) to decide, for each
ambiguous port, whether it is open or dropped by a firewall.
""", """
both = pd.concat([states_of("FIN").set_index("port")["state"].rename("FIN"),
                  states_of("SYN").set_index("port")["state"].rename("SYN")], axis=1)


def verdict(row):
    if row["FIN"] != "open|filtered":
        return row["FIN"]
    return "open" if row["SYN"] == "open" else "filtered (dropped: no answer to SYN either)"


both["combined"] = both.apply(verdict, axis=1)
both
""", answer="""
22, 80, 443 (open) and 135 (dropped) all stay silent, so all four are open|filtered: an open port's only
answer is silence, and silence is also what a dropping firewall gives. The SYN scan separates them: 22, 80 and
443 answer SYN/ACK (open); 135 stays silent to SYNs too (filtered). These scans are worth their ambiguity where
a firewall blocks SYNs but lets other segments through — and they fool no modern stateful firewall. (Windows
answers RST even on open ports, against the RFC: FIN/NULL/Xmas then see every port closed.)
""")

L2.md("""
## 5. ACK scan (`nmap -sA`): mapping the firewall, not the ports

An ACK belonging to no connection is answered with RST by open and closed ports alike. An ACK scan therefore
cannot tell open from closed; it tells whether a probe *got through*: RST means **unfiltered**, silence or an
ICMP error **filtered**.
""")
L2.code("""
display(dialogue(data["ACK"]["packets"], 22))
display(dialogue(data["ACK"]["packets"], 23))
states_of("ACK")
""")
L2.exercise("2.4", """
nmap's window scan (`-sW`) sends the very same ACK probes and reads the RST's TCP window: non-zero means open,
zero closed (some stacks differ). List the window of every RST in the ACK capture (`reply_window` in the probes
table). What would a window scan have said about this Linux target? And what does the ACK scan add to what the
SYN scan already told you, here and in general?
""", """
pr = data["ACK"]["probes"]
rst = pr[pr["reply_kind"] == "rst"]
print("RST windows by port:", dict(zip(rst["dport"].astype(int), rst["reply_window"].astype(int))))
print("window scan reading:", {int(p): ("open" if w > 0 else "closed")
                               for p, w in zip(rst["dport"], rst["reply_window"])})
truth_ports = data["ACK"]["truth"]["scans"][0]["ports"]
print("the truth file's reading of the same replies as -sW:",
      {p["port"]: p["states_by_type"]["WINDOW"] for p in truth_ports})
""", answer="""
Linux sends every RST with window 0, so a window scan calls all answering ports closed — even the open 22, 80 and
443: the window scan only works against stacks that leak the difference. The ACK scan adds nothing new here
(135 dropped and 139 rejected show in the SYN scan too), because this firewall treats all segments alike. In
general it maps the *filter*: a stateless filter that drops SYNs but passes ACKs shows ports filtered to a SYN
scan and unfiltered to an ACK scan.
""")

L2.md("""
## 6. UDP scan (`nmap -sU`)

UDP has no handshake. A closed port makes the kernel answer ICMP port unreachable (3/3): **closed**. An answer
in UDP means **open**. Any other ICMP unreachable means a firewall: **filtered**. Silence is ambiguous:
**open|filtered** — many services answer nothing to a datagram they do not understand, so nmap sends
protocol-specific payloads to well-known ports (DNS, SNMP, NetBIOS …) to coax an answer.
""")
L2.code("""
udp = data["UDP"]["packets"]
for port in (53, 137, 162, 139):
    print(f"port {port}")
    display(dialogue(udp, port))
states_of("UDP")
""")
L2.exercise("2.5", """
(a) How many different payloads (by size) did nmap send to each UDP port, and why more than one to 53, 137
and 161 but an empty datagram to 162, 514 and 139? (b) After the target's answers from ports 53 and 161, the
*scanner* sent some ICMP packets of its own. Find them (ICMP from the scanner), say what they are, and explain
why the scanner's kernel sent them.
""", """
p = data["UDP"]["packets"]
probes_udp = p[(p["ip_proto"] == 17).fillna(False).astype(bool) & (p["src"] == SCANNER)]
print("(a) payload sizes per port:",
      probes_udp.groupby(probes_udp["dport"].astype(int))["payload_len"].apply(lambda s: sorted(set(s.astype(int)))).to_dict())
icmp_back = p[(p["ip_proto"] == 1).fillna(False).astype(bool) & (p["src"] == SCANNER)]
print(f"(b) {len(icmp_back)} ICMP packets from the scanner:")
display(pd.DataFrame({"packet": [describe(r) for _, r in icmp_back.iterrows()],
                      "about the target's datagram from port": icmp_back["q_sport"].astype(int).to_numpy()}))
""", answer="""
(a) nmap has a payload database for well-known UDP services: a DNS query for 53, SNMP requests for 161, NetBIOS
name queries for 137, several variants each, because a silent service is indistinguishable from a dropping
firewall. Ports it knows no payload for get an empty datagram. (b) They are ICMP port unreachable messages
about the target's answers: nmap sent its probes from a raw socket, so no UDP socket of the scanner's kernel is
bound to that source port, and the kernel rejects the answers as it would any datagram to a closed port. It is a
SYN scan's RST, in UDP.
""")

L2.md("""
## 7. The whole picture

All seven techniques against the same target: the analyzer's state for every port (nmap agrees wherever a
cell is marked ✓).
""")
L2.code("""
rows = []
for technique in data:
    for r in states_of(technique).itertuples():
        rows.append({"technique": technique, "port": f"{r.protocol}/{r.port}", "state": r.state,
                     "agrees": r.state == r.nmap_says})
matrix = pd.DataFrame(rows)
table = matrix.pivot(index="port", columns="technique", values="state").reindex(columns=list(CAPTURES))
marks = matrix.pivot(index="port", columns="technique", values="agrees").reindex(columns=list(CAPTURES))
print(f"the analyzer agrees with nmap on {int(matrix['agrees'].sum())} of {len(matrix)} port states")

COLOURS = {"open": "#4caf50", "closed": "#e57373", "filtered": "#9e9e9e", "open|filtered": "#ffd54f",
           "unfiltered": "#64b5f6", "unknown": "#ffffff"}
order = sorted(table.index, key=lambda s: (s.split("/")[0], int(s.split("/")[1])))
table, marks = table.loc[order], marks.loc[order]
fig, ax = plt.subplots(figsize=(9, 4.6))
for i, port in enumerate(table.index):
    for j, technique in enumerate(table.columns):
        state = table.loc[port, technique]
        if isinstance(state, str):
            ax.add_patch(plt.Rectangle((j, i), 1, 1, color=COLOURS.get(state, "white"), ec="white"))
            ax.text(j + 0.5, i + 0.5, state + (" ✓" if marks.loc[port, technique] else " ✗"),
                    ha="center", va="center", fontsize=7)
ax.set_xlim(0, len(table.columns))
ax.set_ylim(len(table.index), 0)
ax.set_xticks(np.arange(len(table.columns)) + 0.5, table.columns)
ax.set_yticks(np.arange(len(table.index)) + 0.5, table.index)
ax.set_title("port state by technique (✓: nmap says the same)")
plt.show()
""")
L2.exercise("2.6", """
Ports 135 and 139 are "filtered" to every TCP technique, yet the firewall treats them differently. What does
the `reason` column say for each? What does each reason tell you about the firewall's rule? And how much
longer does a scan take because of 135: how long did nmap wait before probing it a second time (use `dialogue`
on the SYN capture)?
""", """
for technique in ("SYN", "FIN", "ACK"):
    st = states_of(technique).set_index("port")
    print(f"{technique:4s} 135: {st.loc[135, 'state']} ({st.loc[135, 'reason']}),"
          f"  139: {st.loc[139, 'state']} ({st.loc[139, 'reason']})")
d135 = dialogue(data["SYN"]["packets"], 135)
print(f"SYN scan: nmap probed 135 again after {d135['ms'].iloc[1] - d135['ms'].iloc[0]:.0f} ms")
""", answer="""
135: no-response — the rule *drops*: the scanner hears nothing and must wait for a timeout before retrying
(about a second here with `-T4`) and before concluding. 139: admin-prohibited (ICMP 3/13) — the rule *rejects*:
the answer is immediate and tells the scanner outright that a firewall is there. Dropping costs a scanner time
(and a scan of many dropped ports becomes slow); rejecting answers fast but reveals the filter.
""")

L2.md("""
## 8. Which tool?

The technique says *how*; the probes' headers often say *who*. The analyzer looks for each tool's signature
(`analyzer/analysis/fingerprints.py`) and gives its evidence. nmap's raw probes carry a random TTL in 37–59 (you saw it in
exercise 2.2). Here is a SYN scan of the same ports by hping3 (`hping3 -S -c 2`, once per port):
""")
L2.code("""
hp = load("scans_hping3")
display(hp["scans"][["type", "flags", "probes", "ports_probed", "tool", "tool_evidence"]])
display(dialogue(hp["packets"], 22))
""")
L2.exercise("2.7", """
Check the hping3 signature yourself: for the scanner's SYNs in `hp["packets"]` list the TTLs, windows, TCP
options (`tcp_options`, NaN when there are none) and the source ports in sending order. Which of these set
hping3's probes apart from nmap's (exercise 2.2) and from a kernel's?
""", """
p = hp["packets"]
syns = p[(p["tcp_flags"] == 0x02).fillna(False).astype(bool) & (p["src"] == SCANNER)]
print("TTLs:", sorted(int(v) for v in syns["ttl"].unique()), " windows:", sorted(int(v) for v in syns["window"].unique()),
      " with TCP options:", int(syns["tcp_options"].notna().sum()), "of", len(syns))
print("source ports in order:", syns["sport"].astype(int).tolist())
print("step between consecutive source ports:", np.diff(syns["sport"].astype(int).to_numpy()).tolist())
""", answer="""
hping3's SYNs carry no TCP options at all (every kernel and nmap send at least an MSS), a fixed window of 512,
the kernel's TTL 64 (unlike nmap's random TTL), and within each run (`-c 2`: two probes) the source port rises by
one per probe from the run's starting port. No options and a source port rising by one are its fingerprint.
""")
L2.md("""
## Takeaways

* A technique is a choice of probe flags; the state is what the reply (or the silence) lets you conclude, under
  the RFC's rules — and only as far as the target follows them.
* Silence is ambiguous for every technique; which ambiguity (filtered vs open|filtered) depends on what an open
  port would have said.
* Combine techniques to resolve ambiguities: SYN for open/closed, FIN/NULL/Xmas and ACK for what a firewall
  lets through, the ICMP reason for how it filters.
* Probes carry their author's fingerprints: TTL, window, options, source ports.

The analyzer's rules are in one place: `from analyzer.analysis.scans import STATE_RULES; print(STATE_RULES)`.
""")


# ================================================================================================ lesson 3

L3 = Lesson(3, "forensic_walkthrough", "A forensic walkthrough of a multi-phase capture")

L3.md("""
**The case.** You are handed `scans_multi.pcap`, a few seconds of traffic captured next to a server. Somebody
suspects it was scanned. Answer, with evidence, the questions an incident report needs:

1. **Who** is on the wire, and what are they?
2. **Whom** did the suspect scan, and **how** (which techniques, when, how fast)?
3. **What was found**: which ports and services did the scans reveal?
4. **Which tool** sent the probes?
5. What in the capture is *ordinary* traffic and must not be blamed on the scanner?

You will use the whole analyzer pipeline: `read` → `match` → `scans` → `hosts` (and, at the end, `families`).
The lab's own record of what happened is in `scans_multi.truth.json`; we look at it only at the end, to check.
""")
L3.md("""
## 1. First look

Before any analysis: how long is the capture, which protocols, who talks to whom, how much?
""")
L3.code("""
packets = analyzer.read(SAMPLES / "scans_multi.pcap")
probes = analyzer.match(packets)
t0 = packets["ts_ns"].min()
packets["t"] = (packets["ts_ns"] - t0) / 1e9           # seconds since the capture began
PROTO_NAMES = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6"}
packets["proto"] = np.where(packets["arp_op"].notna(), "ARP",
                            packets["ip_proto"].map(PROTO_NAMES).fillna("other").astype(str))
print(f"{len(packets)} packets over {packets['t'].max():.1f} s; {len(probes)} request/reply pairs matched")
packets.groupby(["src", "dst", "proto"], observed=True).agg(
    packets=("frame", "size"), bytes=("wirelen", "sum"), payload_bytes=("payload_len", "sum"))
""")
L3.code("""
fig, ax = plt.subplots(figsize=(9, 3))
bins = np.arange(0, packets["t"].max() + 0.25, 0.25)
groups = [(name, packets.loc[packets["proto"] == name, "t"]) for name in ("TCP", "UDP", "ICMP", "ARP")]
ax.hist([g for _, g in groups], bins=bins, stacked=True, label=[n for n, _ in groups])
ax.set_xlabel("seconds since the capture began")
ax.set_ylabel("packets per 250 ms")
ax.legend()
ax.set_title("traffic over time")
plt.show()
""")
L3.md("""
Two hosts only, talking steadily, with a few bursts. Bursts of many small packets are what scans look like;
steady exchanges with payload are what clients look like. Let us be more precise.
""")
L3.exercise("3.1", """
For the packets from 10.77.40.1 to 10.77.40.2, list per protocol and destination port: the number of packets,
how many carried payload, and the number of distinct source ports. Which ports look like a service in ordinary
use, and which look probed?
""", """
out = packets[(packets["src"] == "10.77.40.1") & packets["dport"].notna()]
per_port = out.groupby(["proto", out["dport"].astype(int)], observed=True).agg(
    packets=("frame", "size"),
    with_payload=("payload_len", lambda s: int((s > 0).sum())),
    source_ports=("sport", "nunique"),
)
per_port
""", answer="""
TCP 80 and UDP 53 carry many packets, most with payload, from many source ports: clients using a web server and
a DNS server. Every other port gets one or two small packets without payload (or nmap's fixed UDP payloads),
all from one or two source ports: probes. Ports 80 and 53 were *also* probed — the scan and the clients overlap
on them, which is why a per-packet view is needed.
""", hint="# Hint: out = packets[(packets['src'] == '10.77.40.1') & packets['dport'].notna()], then groupby")

L3.md("""
## 2. Whom, how and when: the scans

`analyzer.scans` separates the probes into phases (per scanner and technique, with the probe header's
signature) and keeps those that look like a scan. Times are epoch seconds; we show them relative to the capture.
""")
L3.code("""
found, states = analyzer.scans(packets, probes)
found = found.assign(start=found["first"] - t0 / 1e9, end=found["last"] - t0 / 1e9)
found[["phase", "scanner", "target", "type", "flags", "start", "end", "probes", "ports_probed", "rate", "shape"]]
""")
L3.md("""
The analyzer's per-probe view (`analyzer.analysis.scans.classify_probes`) shows how each request/reply pair was read:
its technique from the probe's flags, and whether it is *scan-like* — a TCP probe on whose connection the
prober sent no payload, or a UDP probe that is empty or comes from a source port reused for several ports.
""")
L3.code("""
from analyzer.analysis.scans import classify_probes

view = classify_probes(packets, probes)
view["t"] = (view["ts_ns"] - t0) / 1e9
view["port"] = view["protocol"].astype(str) + "/" + view["dport"].astype("Int64").astype(str)
display(view.groupby(["src", "technique", "scan_like"], observed=True).size().rename("probes").to_frame())

to_targets = view[view["dst"].isin(set(found["target"]))]      # requests sent to the scanned host
ports = sorted(to_targets["port"].unique(), key=lambda s: (s.split("/")[0], int(s.split("/")[1])))
ypos = {p: i for i, p in enumerate(ports)}
fig, ax = plt.subplots(figsize=(9, 4))
for row in found.itertuples():
    ax.axvspan(row.start - 0.02, row.end + 0.02, color="tab:blue", alpha=0.12)
    ax.text(row.start, len(ports) - 0.1, row.type, fontsize=8, color="tab:blue")
ordinary = to_targets[~to_targets["scan_like"]]
ax.scatter(ordinary["t"], ordinary["port"].map(ypos), marker="x", color="grey", s=16, label="not scan-like")
for technique, g in to_targets[to_targets["scan_like"]].groupby("technique"):
    ax.scatter(g["t"], g["port"].map(ypos), s=24, label=f"{technique} probe")
ax.set_yticks(range(len(ports)), ports)
ax.set_ylim(-0.6, len(ports) + 0.5)
ax.set_xlabel("seconds since the capture began")
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
ax.set_title("requests to the scanned host by time and port (shaded: scan phases)")
plt.show()
""")
L3.md("""
The table above also lists requests *from* 10.77.40.2: the server's segments of ordinary connections (its ACKs
and FIN/ACKs to the client's ports, read as "ACK" and "MAIMON" by their flags). `match` pairs any request-like
segment with what answers it; it is `scans` that decides what is a scan.
""")
L3.exercise("3.2", """
Put the phases in time order. For each give its start (seconds since the capture began), its duration, the
number of probes and ports, and the pause before the next phase. Did one scanner run the three phases one after
the other, or at the same time?
""", """
timeline = found.sort_values("start")[["type", "start", "end", "probes", "ports_probed"]].reset_index(drop=True)
timeline["duration_s"] = timeline["end"] - timeline["start"]
timeline["pause_before_next_s"] = timeline["start"].shift(-1) - timeline["end"]
timeline.round(3)
""", answer="""
SYN first, then UDP, then FIN, each over in about a second or less (nmap's `-T4` timing, with a retry after a
second for the silent ports), separated by pauses of one to a few seconds: one scanner running three scans one after
the other, as three separate nmap runs would.
""")

L3.md("""
## 3. Who: the hosts

`analyzer.hosts` describes every address seen as a source: its MAC, the vendor the MAC's prefix belongs to, and
OS hints with their evidence. Passing the port states lets it use RFC 793 behaviour as evidence too, and passing
the scans table lets it leave out what a scanning tool crafted (its probes are the tool's, not the host's system's).
""")
L3.code("""
host_table = analyzer.hosts(packets, probes, states, found)
host_table
""")
L3.exercise("3.3", """
The MACs' vendor reads "locally administered": what does that mean (look at the second-lowest bit of the first
byte)? Why does the analyzer say 10.77.40.2 runs Linux — which evidence? For 10.77.40.1, compare the TTLs of the
packets it sent: which are its kernel's own packets and which were crafted, and how can you tell?
""", """
first_byte = int(host_table.loc[0, "mac"].split(":")[0], 16)
print(f"first byte 0x{first_byte:02x}: locally administered bit = {(first_byte >> 1) & 1}, multicast bit = {first_byte & 1}")
print("10.77.40.2 evidence:", host_table.set_index("address").loc["10.77.40.2", "os_evidence"])
mine = packets[(packets["src"] == "10.77.40.1") & packets["ttl"].notna()]
ttl_kind = np.where(mine["ttl"] == 64, "TTL 64 (kernel)", "TTL < 64 (crafted)")
mine.groupby([ttl_kind, "proto"]).size().rename("packets").to_frame()
""", answer="""
A set 0x02 bit in the first byte means the address was assigned locally, not by a manufacturer: virtual
interfaces (veth, VMs, containers) and privacy-randomised MACs. 10.77.40.2: initial TTL 64 and the SYN/ACK's
window and option layout (MSS, SACK, timestamps, NOP, window scale) are Linux's. 10.77.40.1: its ordinary packets
(HTTP, DNS, RSTs and ICMP errors from its kernel) carry TTL 64, a Linux-like kernel; its probes carry TTLs
below 64 that vary from packet to packet — no kernel does that, a scanner building raw packets does. That is
why `hosts`, given the scans table, takes the evidence for 10.77.40.1 from its kernel's packets only.
""")

L3.md("""
## 4. Ordinary traffic

Blaming the scanner for the HTTP downloads would be wrong, and so would missing a probe hidden among them.
""")
L3.exercise("3.4", """
Count the ordinary traffic: (a) how many TCP connections to port 80 carried payload, and how many bytes the server
sent in them; (b) how many DNS queries went to UDP port 53 from single-use source ports, and how many of them
were answered. Were the clients active before, during and after the scans?
""", """
tcp80 = packets[(packets["proto"] == "TCP") & ((packets["dport"] == 80) | (packets["sport"] == 80)).fillna(False)]
client_port = np.where(tcp80["dport"] == 80, tcp80["sport"], tcp80["dport"])
conns = tcp80.groupby(client_port).agg(start=("t", "min"), payload=("payload_len", "sum"),
                                       server_bytes=("payload_len", lambda s: int(s[tcp80.loc[s.index, "sport"] == 80].sum())))
http = conns[conns["payload"] > 0]
print(f"(a) {len(http)} HTTP connections with payload, {int(http['server_bytes'].sum())} bytes from the server,"
      f" from t = {http['start'].min():.1f} s to {http['start'].max():.1f} s")
dns = packets[(packets["proto"] == "UDP") & (packets["dport"] == 53).fillna(False) & (packets["src"] == "10.77.40.1")]
uses = dns["sport"].value_counts()
queries = dns[dns["sport"].map(uses) == 1]
answered = packets[(packets["proto"] == "UDP") & (packets["sport"] == 53).fillna(False)]["dport"]
n_answered = int(queries["sport"].isin(set(answered)).sum())
print(f"(b) {len(queries)} DNS queries from single-use ports, {n_answered} answered,"
      f" from t = {queries['t'].min():.1f} s to {queries['t'].max():.1f} s")
print("scan phases:", [(r.type, round(r.start, 2), round(r.end, 2)) for r in found.sort_values("start").itertuples()])
""", answer="""
Some ten HTTP downloads and some twenty DNS queries, spread over the whole capture: the clients ran before,
during and after the scans, from the same address as the scanner. Source address alone therefore cannot separate
scan from use; payload and port reuse can.
""", hint="# Hint: a TCP connection is identified here by the client's port (sport when dport == 80, else dport)")

L3.md("""
## 5. What was found

Each phase's port states, side by side; `reason` is the reply each state rests on (nmap's `--reason` words).
""")
L3.code("""
states["port_label"] = states["protocol"] + "/" + states["port"].astype(str)
by_phase = states.pivot_table(index="port_label", columns="type", values="state", aggfunc="first")
display(by_phase)
states[["type", "port_label", "state", "reason", "probes", "reply_ttl"]]
""")
L3.exercise("3.5", """
Combine the three phases into one verdict per port, as you would write it in the report: for TCP, use the SYN
scan's open/closed and the FIN scan where SYN saw nothing; say for each filtered port whether the firewall drops
or rejects (the `reason`). For UDP, say which ports are open, closed, rejected, and which remain unknown.
""", """
def tcp_verdict(port):
    syn = states[(states["type"] == "SYN") & (states["port"] == port)].iloc[0]
    fin = states[(states["type"] == "FIN") & (states["port"] == port)]
    if syn["state"] in ("open", "closed"):
        return syn["state"]
    how = "rejected (ICMP " + syn["reason"] + ")" if syn["reason"] != "no-response" else "dropped (no answer)"
    agree = f"; FIN: {fin['state'].iloc[0]}" if len(fin) else ""
    return f"filtered: {how}{agree}"


def udp_verdict(row):
    return {"open": "open (answered)", "closed": "closed (port unreachable)",
            "open|filtered": "unknown: open or dropped (no answer)"}.get(
        row["state"], f"filtered: rejected (ICMP {row['reason']})")


verdict = {f"tcp/{p}": tcp_verdict(p) for p in sorted(states.loc[states["type"] == "SYN", "port"])}
verdict |= {f"udp/{r.port}": udp_verdict(r._asdict()) for r in states[states["type"] == "UDP"].itertuples()}
pd.Series(verdict, name="verdict").to_frame()
""", answer="""
TCP 22, 80 and 443 open; 23 and 25 closed; 135 dropped by a firewall (silent to SYN and FIN alike); 139 rejected
(ICMP admin-prohibited). UDP 53 and 161 open; 162 and 514 closed; 139 rejected; 137 unknown (open|filtered —
in fact the lab drops it). The FIN scan confirmed and added nothing here: it is the SYN scan that settles TCP.
""")

L3.md("""
## 6. Which tool

The analyzer names a tool per phase when the probes carry its signature, and gives the evidence.
""")
L3.code("""
found[["type", "tool", "tool_evidence"]]
""")
L3.exercise("3.6", """
Check the attribution yourself. For each phase, take its scan-like probes from `view` (same technique, between the
phase's start and end) and list the TTLs they carried (`probe_ttl`) and their source ports. Do the same for the
ordinary traffic's requests (not scan-like). What separates the scanner's probes from the clients', and what
points to nmap in particular?
""", """
rows = []
for ph in found.sort_values("start").itertuples():
    g = view[view["scan_like"] & (view["technique"] == ph.type) & view["t"].between(ph.start - 1e-6, ph.end + 1e-6)]
    rows.append({"who": f"{ph.type} phase", "requests": len(g),
                 "ttls": sorted(int(x) for x in g["probe_ttl"].unique()),
                 "source_ports": sorted(int(x) for x in g["sport"].unique())})
g = view[~view["scan_like"] & (view["src"] == "10.77.40.1")]
rows.append({"who": "client requests", "requests": len(g), "ttls": sorted(int(x) for x in g["probe_ttl"].unique()),
             "source_ports": f"{g['sport'].nunique()} different"})
pd.DataFrame(rows)
""", answer="""
Each phase's probes come from one or two source ports and carry a different TTL nearly every time, within 37–59:
nmap picks a random TTL per raw probe and keeps a source port for a scan (a second one for its retries). The
clients' requests carry the kernel's fixed TTL 64, every one of them, and a new source port per connection or
query. Look at the UDP phase's second source port: it sent one datagram, nmap's retried NetBIOS query to udp/137,
with a payload and from a port used for nothing else — a client's look. The analyzer still counts it in the scan
because it repeats, from a new source port, a probe the scanner had already sent (same target, port and payload
length): a retransmission, which a client asking again (a new DNS id, a new name) does not produce. Its TTL agrees.
""")

L3.md("""
## 7. Check against the lab's record

The truth file records each nmap run: its technique, when it ran, and nmap's verdict per port (from its XML).
""")
L3.code("""
truth = load_truth("scans_multi")
check = []
for ts in truth["scans"]:
    mine = found[found["type"] == ts["type"]]
    got = states[states["type"] == ts["type"]].set_index("port")["state"]
    agree = sum(got.get(p["port"]) == p["state"] for p in ts["ports"])
    check.append({"type": ts["type"], "tool": ts["tool"], "analyzer_tool": ", ".join(mine["tool"]),
                  "ran_from": ts["started"] - t0 / 1e9, "ran_to": ts["ended"] - t0 / 1e9,
                  "analyzer_from": mine["start"].min(), "analyzer_to": mine["end"].max(),
                  "ports_agreeing": f"{agree}/{len(ts['ports'])}"})
print("commands:", *truth["commands"], sep="\\n  ")
pd.DataFrame(check).round(2)
""")
L3.exercise("3.7", """
Write the report's summary as five sentences generated from the tables (f-strings over `found`, `host_table` and
`states`), so that the same code would write the summary of another capture: who scanned whom, with which
techniques and when, what was found open, which tool, and what else was on the wire.
""", """
scanner = found["scanner"].iloc[0]
target = found["target"].iloc[0]
hosts_by_addr = host_table.set_index("address")
phases = found.sort_values("start")
open_ports = sorted(set(states.loc[states["state"] == "open", "port_label"]))
tools = sorted(set(phases["tool"]) - {"unknown"})
ordinary = view[~view["scan_like"] & (view["src"] == scanner)]
summary = [
    f"{scanner} ({hosts_by_addr.loc[scanner, 'mac']}) scanned {target} ({hosts_by_addr.loc[target, 'os']}).",
    "It ran " + ", then ".join(f"a {r.type} scan of {r.ports_probed} ports at t = {r.start:.1f} s" for r in phases.itertuples()) + ".",
    f"The scans found open: {', '.join(open_ports)}.",
    f"The probes carry the signature of {', '.join(tools) or 'no known tool'}: {phases['tool_evidence'].iloc[0]}.",
    (f"The same host also made {len(ordinary)} ordinary requests (to {', '.join(sorted(set(ordinary['port'])))})"
     " during the capture; they are not part of the scans."),
]
print("\\n".join(summary))
""")

L3.md("""
## 8. Your turn: a second case

`nat_qscan.pcap` (lesson 1) is another capture of a scan. Run the same walkthrough on it.
""")
L3.exercise("3.8", """
For `nat_qscan.pcap`: who scanned whom; how many phases, of which technique, and how many probes per port in
each; which tool — and can you tell *which nmap feature* the second phase is; what was found; and what do the
replies reveal about the target beyond its port states? (Use `analyzer.families` or `analyzer.signal_families`.)
""", """
pk = analyzer.read(SAMPLES / "nat_qscan.pcap")
pr = analyzer.match(pk)
f2, s2 = analyzer.scans(pk, pr)
display(f2.assign(per_port=(f2["probes"] / f2["ports_probed"]).round(1))[
    ["phase", "scanner", "target", "type", "probes", "ports_probed", "per_port", "tool", "tool_evidence"]])
display(analyzer.hosts(pk, pr, s2, f2)[["address", "mac", "os"]])
print("open:", sorted(set(s2.loc[s2["state"] == "open", "port"])))
ports_sig, fam_sig = analyzer.signal_families(pk, pr)
for row in fam_sig.itertuples():
    print(f"family {row.family} {row.ports}: {row.kind}; {'; '.join(row.evidence)}")
""", answer="""
10.77.1.2 scanned 10.77.1.1 twice: a SYN scan of nine ports (one probe each, nmap's random TTL), then about ten
SYNs to each of six ports with qscan.nse's fixed template (TTL 128, IP ID 0x55d1, window 3072) — nmap's `qscan`
script, which measures RTTs to find ports answered by different machines. Open: 22, 80, 443, 3306, 8080. The
replies show two machines behind one address: 443, 3306 and 8080 answer with TTL 63 and 2 ms more RTT — they are
forwarded by a NAT gateway to another host. That is what the scanner was after.
""")
L3.md("""
## Takeaways

* Work from the wire upwards: protocol mix and conversations first, then requests and replies, then phases.
* Scan or use? Payload, source-port reuse and the header fields a kernel would never vary separate them — not
  the address, which scanner and client share here.
* Every claim in the report should point to its evidence: a reply, a reason, a TTL, a signature.
* Check your tools against known cases (the truth files) before trusting them on unknown ones.
""")


# ================================================================================================ lessons

LESSONS: list[Lesson] = [L1, L2, L3]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a notebook on disk differs from its lesson")
    args = ap.parse_args(argv)
    if args.check:
        stale = [p for lesson in LESSONS for solutions in (False, True)
                 for p in [HERE / ("solutions" if solutions else "") / lesson.filename]
                 if not p.exists() or p.read_text(encoding="utf-8") != serialize(render(lesson, solutions))]
        for p in stale:
            print(f"stale: {p.relative_to(HERE.parent)} (run python3 notebooks/build_notebooks.py)")
        return 1 if stale else 0
    for path in build():
        print(path.relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
