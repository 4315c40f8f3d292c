"""A fuzz campaign: numbered cases made from a fixed seed, checked by worker processes (the compiled code built
with AddressSanitizer and UBSan), each finding deduplicated by its signature with a reproducer saved.

Case i of seed S is the same bytes on every run (`make_case`), so a campaign is resumable and any case can be
made again: the state (cases done, by mutator; findings) is kept in OUT/state.json, and a run continues where
the last stopped. Cases go to the workers in blocks; a block is counted when it is done. A worker that dies
(a sanitizer report, a signal) or takes longer than the timeout on one case is a finding too: it is restarted
after that case. Findings: OUT/findings/NNN/ holds the reproducer (case.pcap, .pcapng, .gz or .bin) and
finding.json (signature, kind, stage, detail, the case, its seed capture and mutators, how many cases met it).
"""

from __future__ import annotations

import json
import os
import random
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import asan, mutators, seeds

REPO = Path(__file__).resolve().parents[2]
REPORT_EVERY = 25  # every this many cases also writes the HTML report
COUNTS = (1, 1, 1, 2, 2, 3)  # mutators per case, picked from


@dataclass(frozen=True)
class Case:
    index: int
    seed_file: str
    data: bytes
    mutators: list[str]
    options_seed: int
    report: bool


def make_case(seed: int, index: int, corpus: mutators.Corpus) -> Case:
    """Case `index` of campaign `seed`: always the same."""
    rng = random.Random(f"synlens-fuzz:{seed}:{index}")
    seed_file, data, names = mutators.mutate(rng, corpus, rng.choice(COUNTS))
    return Case(index, seed_file, data, names, rng.randrange(1 << 32), index % REPORT_EVERY == 0)


def suffix(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        return ".gz"
    if len(data) >= 4 and int.from_bytes(data[:4], "little") == 0x0A0D0D0A:
        return ".pcapng"
    if len(data) >= 4 and (int.from_bytes(data[:4], "little") in (0xA1B2C3D4, 0xA1B23C4D)
                           or int.from_bytes(data[:4], "big") in (0xA1B2C3D4, 0xA1B23C4D)):
        return ".pcap"
    return ".bin"


# ---------------------------------------------------------------------------------------------- state

@dataclass
class State:
    seed: int
    block: int
    done_blocks: list[int] = field(default_factory=list)
    cases: int = 0
    by_mutator: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0  # cases the reader refused (CaptureError): the rest were read and analysed
    seconds: float = 0.0
    findings: dict[str, dict] = field(default_factory=dict)  # signature -> finding record
    asan: bool = True

    @classmethod
    def load(cls, path: Path) -> State | None:
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- workers

class Worker:
    """A worker process (tests.fuzz worker) fed blocks of cases on stdin, reporting on stdout, one JSON per line."""

    def __init__(self, slot: int, out: Path, seed: int, env: dict[str, str]) -> None:
        self.slot, self.out, self.seed, self.env = slot, out, seed, env
        self.log = out / "logs" / f"worker{slot}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.buffer = b""
        self.block: int | None = None
        self.todo: list[int] = []  # cases of the block not yet begun
        self.case: int | None = None  # the case running, and since when, at which stage
        self.case_since = 0.0
        self.stage = ""
        self.log_at = 0
        self.tally: dict = {}  # this block's counts, added to the state when the block is done

    def start(self) -> None:
        workdir = self.out / "work" / str(self.slot)
        workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.fuzz", "worker", "--seed", str(self.seed), "--workdir", str(workdir)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=REPO, env=self.env,
                start_new_session=True)
        self.buffer = b""

    def send(self, cases: list[int]) -> None:
        self.proc.stdin.write((json.dumps(cases) + "\n").encode())
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                stream.close()
        self.proc = None


def run(out: Path, *, cases: int, seed: int = 19, jobs: int = 1, use_asan: bool = True, timeout: float = 120.0,
        block: int = 50, log: Callable[[str], None] = print) -> State:
    """Run (or resume) the campaign in `out` until `cases` cases are done; returns its state."""
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.json"
    state = State.load(state_path) or State(seed=seed, block=block, asan=use_asan)
    if state.seed != seed or state.block != block or state.asan != use_asan:
        raise SystemExit(f"{out} holds a campaign of seed {state.seed}, blocks of {state.block}, asan {state.asan}: "
                         "resume it with the same settings, or use another folder")
    corpus = seeds.corpus()
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", PYTHONHASHSEED="0")
    if use_asan:
        env = asan.environment(asan.build()) | {"PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1",
                                                "PYTHONHASHSEED": "0"}
    n_blocks = -(-cases // block)
    pending = [b for b in range(n_blocks) if b not in set(state.done_blocks)]
    workers = [Worker(slot, out, seed, env) for slot in range(max(1, min(jobs, len(pending))))]
    sel = selectors.DefaultSelector()
    started = time.monotonic()
    last_save = started

    def give(w: Worker) -> None:
        if w.todo or not pending:
            return
        w.block = pending.pop(0)
        w.todo = [i for i in range(w.block * block, min((w.block + 1) * block, cases))]
        w.tally = {"cases": 0, "by_mutator": {}, "unreadable": 0}
        feed(w)

    def feed(w: Worker) -> None:
        if w.proc is None:
            w.start()
            sel.register(w.proc.stdout, selectors.EVENT_READ, w)
        w.send(w.todo)

    def finding(w: Worker, index: int, record: dict) -> None:
        sig = record["signature"]
        known = state.findings.get(sig)
        if known is not None:
            known["count"] += 1
            known["last_case"] = index
            return
        case = make_case(seed, index, corpus)
        folder = out / "findings" / f"{len(state.findings) + 1:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        reproducer = folder / f"case{suffix(case.data)}"
        reproducer.write_bytes(case.data)
        state.findings[sig] = dict(record, count=1, first_case=index, last_case=index, seed_file=case.seed_file,
                                   mutators=case.mutators, options_seed=case.options_seed, report=case.report,
                                   reproducer=str(reproducer.relative_to(out)))
        (folder / "finding.json").write_text(json.dumps(state.findings[sig], indent=1), encoding="utf-8")
        log(f"finding {len(state.findings)}: {sig} (case {index}, {case.seed_file}, {'+'.join(case.mutators)})")

    def died(w: Worker, why: str) -> None:
        """The worker died in its case (or hung): a finding from its log; restart after that case."""
        index = w.case
        sel.unregister(w.proc.stdout)
        if why == "hang":
            w.stop()
            record = {"kind": "hang", "signature": f"hang in {w.stage}", "stage": w.stage,
                      "detail": f"no progress in {timeout:.0f} s"}
        else:
            try:
                code = w.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                code = None
            w.stop()
            with open(w.log, "rb") as f:
                f.seek(w.log_at)
                text = f.read().decode("utf-8", "replace")
            if index is None:  # between cases: the worker itself is broken
                raise RuntimeError(f"fuzz worker {w.slot} died outside any case (exit {code}):\n{text[-3000:]}")
            record = crash_record(text, code, w.stage)
        finding(w, index, record)
        w.todo = [i for i in w.todo if i > index]
        w.tally["cases"] += 1
        for name in set(make_case(seed, index, corpus).mutators):
            w.tally["by_mutator"][name] = w.tally["by_mutator"].get(name, 0) + 1
        w.case = None
        if w.todo:
            feed(w)
        else:
            block_done(w)

    def block_done(w: Worker) -> None:
        state.done_blocks.append(w.block)
        state.cases += w.tally["cases"]
        state.unreadable += w.tally["unreadable"]
        for name, n in w.tally["by_mutator"].items():
            state.by_mutator[name] = state.by_mutator.get(name, 0) + n
        w.block = None
        give(w)

    for w in workers:
        give(w)
    try:
        while any(w.block is not None for w in workers):
            for key, _ in sel.select(timeout=1.0):
                w: Worker = key.data
                chunk = os.read(key.fileobj.fileno(), 1 << 16)
                if not chunk:
                    died(w, "crash")
                    continue
                w.buffer += chunk
                while b"\n" in w.buffer:
                    line, w.buffer = w.buffer.split(b"\n", 1)
                    message = json.loads(line)
                    if "case" in message:
                        w.case, w.case_since, w.stage = message["case"], time.monotonic(), "make"
                        w.log_at = w.log.stat().st_size
                    elif "stage" in message:
                        w.stage = message["stage"]
                    elif "done" in message:
                        index = message["done"]
                        for record in message["findings"]:
                            finding(w, index, record)
                        w.tally["cases"] += 1
                        w.tally["unreadable"] += message["unreadable"]
                        for name in set(message["mutators"]):
                            w.tally["by_mutator"][name] = w.tally["by_mutator"].get(name, 0) + 1
                        w.todo = [i for i in w.todo if i > index]
                        w.case = None
                        if not w.todo:
                            block_done(w)
            now = time.monotonic()
            for w in workers:
                if w.case is not None and now - w.case_since > timeout:
                    died(w, "hang")
            if now - last_save > 30:
                state.seconds += now - last_save
                last_save = now
                state.save(state_path)
                log(f"{state.cases} cases, {len(state.findings)} findings, {state.seconds:.0f} s")
    finally:
        for w in workers:
            w.stop()
        state.seconds += time.monotonic() - last_save
        state.save(state_path)
    return state


_ASAN_SUMMARY = re.compile(r"SUMMARY: (\w+Sanitizer): (\S+) (\S+?)(?::\d+)* in (\S+)")
_UBSAN = re.compile(r"(\S+\.c):(\d+):\d+: runtime error: (.*)")


def crash_record(log_text: str, returncode: int | None, stage: str) -> dict:
    """A dead worker's finding from its stderr: the sanitizer's report (its kind, file, line, function), else
    the signal and the stage."""
    m = _ASAN_SUMMARY.search(log_text)
    if m:
        tool, what, where, function = m.groups()
        signature = f"{tool}: {what} in {function} ({Path(where).name})"
        return {"kind": "sanitizer", "signature": signature, "stage": stage, "detail": log_text[-6000:]}
    m = _UBSAN.search(log_text)
    if m:
        where, line, message = m.groups()
        message = re.sub(r"-?\d+", "N", message)
        signature = f"UndefinedBehaviorSanitizer: {message} at {Path(where).name}:{line}"
        return {"kind": "sanitizer", "signature": signature, "stage": stage, "detail": log_text[-6000:]}
    how = f"signal {signal.Signals(-returncode).name}" if returncode and returncode < 0 else f"exit {returncode}"
    return {"kind": "crash", "signature": f"crash ({how}) in {stage.split(' /')[0]}", "stage": stage,
            "detail": log_text[-6000:]}


# ---------------------------------------------------------------------------------------------- worker side

def worker(seed: int, workdir: Path) -> None:
    """The worker loop: read a list of case numbers per line on stdin; report each case on stdout."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # (nothing else may write into the protocol)
    asan.load_if_asked()
    from . import harness  # (after the sanitized module is in place)

    corpus = seeds.corpus()

    def say(**message: object) -> None:
        proto.write(json.dumps(message) + "\n")

    for line in sys.stdin:
        for index in json.loads(line):
            say(case=index)
            case = make_case(seed, index, corpus)
            _inject(index)
            outcome = harness.check(case.data, workdir, seed=case.options_seed, report=case.report,
                                    on_stage=lambda name: say(stage=name))
            say(done=index, findings=[f.as_dict() for f in outcome.findings], mutators=case.mutators,
                unreadable=int(not outcome.readable))


def _inject(index: int) -> None:
    """Faults planted on purpose at given cases (SYNLENS_FUZZ_INJECT="crash:3,hang:5,overflow:7"): the tests
    of the campaign itself check that each is seen, saved and deduplicated."""
    plan = dict(item.split(":")[::-1] for item in os.environ.get("SYNLENS_FUZZ_INJECT", "").split(",") if item)
    what = plan.get(str(index))
    if what == "crash":
        os.abort()
    elif what == "hang":
        time.sleep(3600)
    elif what == "overflow":  # a read past a heap block, as a bug in compiled code would make
        import ctypes

        block = ctypes.create_string_buffer(4096)  # (malloc'd: pymalloc keeps only blocks of up to 512 bytes)
        ctypes.memmove(ctypes.create_string_buffer(8192), block, 4096 + 64)
