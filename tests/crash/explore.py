"""The crash-state explorer: record the workloads, generate every state a crash can leave at every point
under each persistence model, run recovery on each, and judge it (``python -m tests.crash.explore``).

    python -m tests.crash.explore                 # every crash state (make crash-states)
    python -m tests.crash.explore --sample 300    # a bounded sample: 300 crash points a workload (make test)

Prints, per kind of file and persistence model, the crash states explored and how each recovered, the
first cases that recovered wrongly (where, under which model, what recovery made of it), and last:

    explored N crash states (...): 0 recovered wrongly, 0 undetected
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .check import Kind, Scratch, folder_kind, lease_kind, trial_kind
from .model import MODELS, State, Timeline
from .trace import Op, Recording, record

ROOT = Path(__file__).resolve().parents[2]
VERDICTS = ("recovered", "set aside", "wrong", "undetected")


@dataclass
class Tally:
    counts: Counter = field(default_factory=Counter)  # (kind, model, verdict) -> states the model can leave
    distinct: Counter = field(default_factory=Counter)  # kind -> states of any model (each checked once)
    sampled: Counter = field(default_factory=Counter)  # (kind, model) -> crash points whose states were sampled
    crashed: Counter = field(default_factory=Counter)  # (kind, model, file) -> states that left it crashed
    examples: list = field(default_factory=list)
    covered: Counter = field(default_factory=Counter)  # kind -> block-model states proved by havoc runs
    failures: Counter = field(default_factory=Counter)  # (kind, model, verdict, files left crashed) -> states
    havoc_failed: Counter = field(default_factory=Counter)  # kind -> families whose havoc runs disagreed
    havoc_cases: list = field(default_factory=list)
    points: Counter = field(default_factory=Counter)  # kind -> crash points visited

    def total(self, verdict: str | None = None) -> int:
        return sum(n for (_, _, v), n in self.counts.items() if verdict is None or v == verdict)


def _groups_of(text: str) -> tuple[str, list[str]]:
    event, groups, *_ = text.split()
    return event, groups.split(",")


def _describe(ops: list[Op], k: int) -> str:
    """Where crash point k falls: the last mark before it and the operation it follows."""
    mark = next((ops[i].text for i in range(min(k, len(ops) - 1), -1, -1) if ops[i].kind == "mark"), "start")
    if 0 <= k < len(ops):
        op = ops[k]
        what = {"write": f"write {len(op.data)} B at {op.offset} of inode {op.inode}",
                "truncate": f"truncate inode {op.inode} to {op.size}", "fsync": f"fsync inode {op.inode}",
                "add": f"create {op.name}", "remove": f"remove {op.name}",
                "rename": f"rename {op.name} -> {op.new_name}"}.get(op.kind, op.kind)
    else:
        what = "the end"
    return f"after op {k} ({what}), inside/after '{mark}'"


class KindExplorer:
    """One kind of file of one recording: its acceptable states at every crash point, and the checks."""

    def __init__(self, kind: Kind, recording: Recording, scratch: Scratch):
        self.kind, self.recording, self.scratch = kind, recording, scratch
        self.ops = recording.ops
        self.outcomes: dict[str, tuple] = {}
        self.boundaries: dict[str, list[tuple[int, State]]] = {g: [] for g in kind.groups}
        self.windows: dict[str, list[tuple[int, int]]] = {g: [] for g in kind.groups}
        self._plan()

    def outcome(self, state: State) -> tuple:
        key = state.digest()
        if key not in self.outcomes:
            self.outcomes[key] = self.kind.recover(self.scratch.lay_out(state))
        return self.outcomes[key]

    def _restricted(self, state: State, group: str) -> State:
        keep = self.kind.groups[group]
        files = tuple(f for f in state.files if keep(f[0]))
        return State(files, state.dirs)

    def _mark(self, op: Op, k: int, state: State, open_at: dict[str, list[int]]) -> None:
        """A marked operation of some groups begins or ends at operation k."""
        event, groups = _groups_of(op.text)
        for group in groups:
            if group not in self.kind.groups:
                continue
            if event == "begin":
                open_at.setdefault(group, []).append(k)
            else:  # operations nest (acquiring a lease may break a dead one first)
                self.windows[group].append((open_at[group].pop(), k))
                if not open_at[group]:
                    del open_at[group]
                self.boundaries[group].append((k, self._restricted(state, group)))

    def _plan(self) -> None:
        """The states each group is in after each of its operations, and its operations' spans."""
        open_at: dict[str, list[int]] = {}
        timeline = Timeline(self.recording)
        names_before: dict[int, set[str]] = {}
        for k, snapshot in timeline.walk(marks=True):
            state = snapshot.latest_state(self.kind.wanted)
            names = snapshot.latest_names()
            if k == -1:
                for group in self.kind.groups:
                    self.boundaries[group].append((-1, self._restricted(state, group)))
                names_before = names
                continue
            if k == len(self.ops):
                break
            op = self.ops[k]
            if op.kind == "mark":
                self._mark(op, k, state, open_at)
                continue
            touched_paths = _touched_paths(op, names_before)
            for group, keep in self.kind.groups.items():
                if group not in open_at and any(keep(p) for p in touched_paths):
                    self.windows[group].append((k - 1, k))  # an operation outside any marked one: its own span
                    self.boundaries[group].append((k, self._restricted(state, group)))
            names_before = names
        self.history = [self.outcome(s) for group in self.boundaries for _, s in self.boundaries[group]]
        self.kind.history = self.history

    def acceptable(self, k: int) -> set[tuple]:
        """The outcomes of every state a crash after operation k may rightly leave."""
        per_group = []
        for group in self.kind.groups:
            last = max((b for b in self.boundaries[group] if b[0] < k), key=lambda b: b[0])
            states = [last[1]]
            for begin, end in self.windows[group]:
                if begin < k <= end:
                    states.append(next(s for i, s in self.boundaries[group] if i == end))
            per_group.append(states)
        outcomes = set()
        for combo in _product(per_group):
            files = tuple(sorted({f for s in combo for f in s.files}))
            dirs = tuple(sorted({d for s in combo for d in s.dirs}))
            outcomes.add(self.outcome(State(files, dirs)))
        return outcomes


def _paths_of_entry(names: dict[int, set[str]], op: Op) -> list[str]:
    parents = names.get(op.inode, set())
    return [f"{p}/{n}" if p else n for p in parents for n in (op.name, op.new_name) if n]


def _touched_paths(op: Op, names_before: dict[int, set[str]]) -> set[str]:
    """The paths an operation changes, by the names its inode or entry had before it."""
    if op.kind in ("write", "truncate"):
        return names_before.get(op.inode, set())
    if op.kind in ("add", "remove", "rename"):
        return set(_paths_of_entry(names_before, op))
    return set()


def _product(lists):
    if not lists:
        yield ()
        return
    for head in lists[0]:
        for rest in _product(lists[1:]):
            yield (head, *rest)


def explore_kind(explorer: KindExplorer, tally: Tally, models, points: set[int] | None, limit: int,
                 label: str) -> None:
    kind = explorer.kind
    checked: dict[str, set[tuple]] = {model: set() for model in models}
    everywhere: set[tuple] = set()
    timeline = Timeline(explorer.recording)
    for k, snapshot in timeline.walk():
        if k == -1 or (points is not None and k not in points):
            continue
        tally.points[label] += 1
        acceptable = explorer.acceptable(k)
        frozen = frozenset(acceptable)
        for model in models:
            if model == "blocks":
                families, sampled = snapshot.block_families(kind.wanted, limit, seed=k)
                states = [s for family in families for s in _family_states(explorer, family, acceptable, tally,
                                                                         label, limit, k)]
            else:
                states, sampled = snapshot.crash_states(model, kind.wanted, limit, seed=k)
            if sampled:
                tally.sampled[(label, model)] += 1
            for state, crashed in states:
                key = (state.digest(), frozen)  # the same bytes may be right at one point and wrong at another
                if key in checked[model]:
                    continue
                checked[model].add(key)
                if key not in everywhere:
                    everywhere.add(key)
                    tally.distinct[label] += 1
                outcome = explorer.outcome(state)
                verdict = "recovered" if outcome in acceptable else kind.judge(explorer.scratch.lay_out(state), outcome)
                tally.counts[(label, model, verdict)] += 1
                for inode in crashed:
                    tally.crashed[(label, model, _file_name(state, inode, explorer.recording))] += 1
                if verdict != "recovered":
                    files = sorted({_file_name(state, inode, explorer.recording) for inode in crashed})
                    tally.failures[(label, model, verdict, ", ".join(files) or "none")] += 1
                if verdict in ("wrong", "undetected") and len(tally.examples) < 200:
                    tally.examples.append((label, model, verdict, _describe(explorer.ops, k), outcome,
                                           sorted(acceptable, key=repr)))


def _family_states(explorer: KindExplorer, family, acceptable: set, tally: Tally, label: str, limit: int,
                   k: int) -> list:
    """The real states of a block-model family to judge one by one: its durable and issued ones if its havoc
    runs show that recovery never read the un-synced blocks of its large files (the family's other states
    are then covered), else a sample of them as well."""
    if not family.havoc:
        return family.real
    outcomes = {explorer.outcome(state) for state in family.havoc}
    outcomes |= {explorer.outcome(state) for state, _ in family.real}
    if len(outcomes) == 1 and outcomes <= acceptable:
        tally.covered[label] += family.covered
        return family.real
    tally.havoc_failed[label] += 1
    if len(tally.havoc_cases) < 50:
        tally.havoc_cases.append((label, _describe(explorer.ops, k), sorted(outcomes, key=repr), acceptable))
    return family.real + family.draw(min(limit, 64), random.Random(f"{label}-{k}"))


def _file_name(state: State, inode: int, recording: Recording) -> str:
    for path, node, _ in state.files:
        if node == inode:
            return _kind_of_path(path)
    return "directory" if recording.inodes[inode].is_dir else "file (unnamed)"


def _kind_of_path(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    for suffix, kind in ((".h5.journal", "journal"), (".h5", "trial file"), (".state.pt", "checkpoint"),
                         (".lease", "lease"), ("manifest.json", "manifest"), ("submissions.jsonl", "records")):
        if name.endswith(suffix):
            return kind
    return "temporary"


def kinds_for(workload: str, folder: Path) -> list[Kind]:
    from . import workloads

    if workload == "groups":
        trial = workloads.groups_trial()
        return [trial_kind("trial file, journal, checkpoint (G)", trial, folder / "trials" / f"{trial.trial_id}.h5")]
    if workload == "stability":
        trial = workloads.stability_trial()
        return [trial_kind("trial file, journal, search checkpoint (S)", trial,
                           folder / "trials" / f"{trial.trial_id}.h5")]
    trial_id = workloads.folder_grid(workloads.FOLDER_SEEDS[1]).trials()[0].trial_id
    return [folder_kind(), lease_kind((".submit.lease", f"trials/{trial_id}.lease"))]


def explore(workloads=("groups", "stability", "folder"), models=MODELS, sample: int | dict | None = None,
            limit: int = 4096, seed: int = 0, no_fsync: bool = False, log=print) -> Tally:
    """Record each workload and check its crash states; ``sample``: crash points a kind (all if None), or a
    dict of them by workload."""
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="crash-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as work:
        work_dir = Path(work)
        for workload in workloads:
            start = time.time()
            folder, marks = work_dir / f"{workload}-folder", work_dir / f"{workload}.marks"
            argv = [sys.executable, "-m", "tests.crash.workloads", workload, str(folder), str(marks)]
            with tempfile.TemporaryDirectory(prefix="crash-record-") as traced:
                # Recorded on the disk the folder would be on (not tmpfs): the pipeline may choose by file system.
                folder = Path(traced) / "folder"
                argv[4] = str(folder)
                recording = record(argv + (["--no-fsync"] if no_fsync else []), folder, marks,
                                   work_dir / f"{workload}.strace", env=None, cwd=ROOT)
                kinds = kinds_for(workload, folder)
                syncs = sum(op.kind == "fsync" for op in recording.ops)
                log(f"{workload}: recorded {len(recording.ops)} operations ({syncs} fsync) in {time.time() - start:.0f} s")
                for kind in kinds:
                    explorer = KindExplorer(kind, recording, Scratch(work_dir / "scratch", recording))
                    crash_points = [k for k, op in enumerate(recording.ops) if op.kind != "mark"] + [len(recording.ops)]
                    points = None
                    wanted = sample.get(workload) if isinstance(sample, dict) else sample
                    if wanted is not None and wanted < len(crash_points):
                        points = set(random.Random(f"{seed}-{workload}-{kind.name}").sample(crash_points, wanted))
                    started = time.time()
                    explore_kind(explorer, tally, models, points, limit, kind.name)
                    states = tally.distinct[kind.name]
                    log(f"  {kind.name}: {tally.points[kind.name]} crash points, {states} crash states in "
                        f"{time.time() - started:.0f} s")
    return tally


def report(tally: Tally, log=print) -> None:
    labels = list(dict.fromkeys(label for label, _, _ in tally.counts))
    _report_counts(tally, labels, log)
    _report_damaged_files(tally, log)
    _report_wrong_recoveries(tally, log)
    _report_totals(tally, labels, log)


def _report_counts(tally: Tally, labels: list[str], log) -> None:
    log("")
    log(f"{'file kind':<44} {'model':<7} {'states':>8} " + " ".join(f"{v:>11}" for v in VERDICTS) + "  sampled points")
    for label in labels:
        for model in MODELS:
            row = [tally.counts[(label, model, v)] for v in VERDICTS]
            if not sum(row):
                continue
            log(f"{label:<44} {model:<7} {sum(row):>8} " + " ".join(f"{n:>11}" for n in row)
                + f"  {tally.sampled[(label, model)]}")


def _report_damaged_files(tally: Tally, log) -> None:
    files: Counter = Counter()
    for (_, model, name), n in tally.crashed.items():
        files[(name, model)] += n
    if files:
        log("")
        log("states that left each file not as last written, per model (each state counted once a model):")
        for name in sorted({n for n, _ in files}):
            log(f"  {name:<12} " + ", ".join(f"{m} {files[(name, m)]}" for m in MODELS if files[(name, m)]))


def _report_wrong_recoveries(tally: Tally, log) -> None:
    if tally.failures:
        log("")
        log("states not recovered, by the files the crash left as not last written:")
        for (label, model, verdict, files), n in sorted(tally.failures.items()):
            log(f"  {label} / {model} / {verdict}: {n} with {files} crashed")
    shown: dict = {}
    for label, model, verdict, where, outcome, acceptable in tally.examples:
        shown.setdefault((label, model, verdict), []).append((where, outcome, acceptable))
    if shown:
        log("")
        log("first cases recovered wrongly or undetected:")
        for (label, model, verdict), cases in shown.items():
            for where, outcome, acceptable in cases[:3]:
                log(f"  [{label} / {model} / {verdict}] {where}")
                log(f"      recovery gave {_short(outcome)}")
                log(f"      acceptable:   {' | '.join(_short(a) for a in acceptable)}")


def _report_totals(tally: Tally, labels: list[str], log) -> None:
    by_model = ", ".join(f"{m} {sum(n for (_, mm, _), n in tally.counts.items() if mm == m)}" for m in MODELS)
    by_kind = ", ".join(f"{label} {tally.distinct[label]}" for label in labels)
    sampled = sum(tally.sampled.values())
    sample_note = f"; {sampled} crash points sampled" if sampled else ""
    covered = sum(tally.covered.values())
    if covered or tally.havoc_failed:
        log("")
        log("block model, large files (more than 256 states each), by havoc runs:")
        for label in labels:
            log(f"  {label}: {tally.covered[label]:.3g} further states covered; {tally.havoc_failed[label]} "
                "families whose havoc runs disagreed (their states sampled)")
    sample_note += f"; {covered:.3g} more block-model states covered by havoc runs" if covered else ""
    log("")
    log(f"explored {sum(tally.distinct.values())} crash states ({by_kind}; by model: {by_model}; "
        f"{tally.total('set aside')} set aside as damaged{sample_note}): {tally.total('wrong')} recovered wrongly, "
        f"{tally.total('undetected')} undetected")


def _short(outcome: tuple) -> str:
    text = repr(tuple(o[:12] + "…" if isinstance(o, str) and len(o) > 40 else o for o in outcome))
    return text[:300]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="groups,stability,folder")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--sample", type=int, default=None, help="crash points per kind (default: all)")
    parser.add_argument("--limit", type=int, default=4096, help="states a crash point (beyond: a sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fsync", action="store_true", help="record with fsync made a no-op")
    args = parser.parse_args(argv)
    # Stopped with SIGTERM (a timeout, a cancelled job), it still removes its recordings from /dev/shm.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    tally = explore(tuple(args.workloads.split(",")), tuple(args.models.split(",")), args.sample, args.limit,
                    args.seed, args.no_fsync)
    report(tally)
    return 0 if tally.total("wrong") == tally.total("undetected") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
