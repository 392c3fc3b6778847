"""What each task of a submission runs, and for how long it may: a grid into job arrays by cost.

Decided here once, and handed down to the array tasks (which run exactly the units they are given):

1. **Units of training.** With seed packing, trials equal but for their seed train together as one unit
   (at most ``pack_size`` seeds, ``pipeline.core.packing``); every other trial is a unit of its own.
2. **The cost of each unit**: its estimated wall time on the profile's device (``pipeline.launch.throughput``)
   and the time its task's limit reserves for it: the estimate times a margin that grows the less direct
   the estimate is (measured on this GPU type x1.5, scaled from another by float32 peak x2, assumed x3).
   A profile's ``[time_limit_min]`` for an experiment replaces the estimate by minutes per trial, as given.
3. **Tasks.** ``trials_per_task`` (the grid's ``[launch]`` or ``--trials-per-task``), when given, makes
   tasks of that many trials in grid order, as it always did. Otherwise the launcher packs cheap units of
   one cost class several to a task, until a task is estimated to run ``min_task_min`` (a job's start-up:
   scheduling, Python, CUDA, the data, is then a small part of it); a unit as long as that is a task alone.
4. **Arrays.** Each task's limit is its reserve plus start-up, rounded up to one of ``BANDS_MIN`` and
   clamped to the partition's maximum (``max_time_min``); tasks with one limit form one job array. A task
   estimated beyond the maximum is carried by requeues: it is checkpointable, and on time-out SLURM
   requeues it (up to ``MAX_TIMEOUT_REQUEUES`` times) to resume from its last checkpointed epoch; the
   launcher warns, naming its trials. The profile's ``array_parallelism`` is shared among the arrays in
   proportion to their GPU-hours, so that they finish together and the grid never runs more at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline import experiments
from pipeline.experiments import Trial
from pipeline.launch import throughput
from pipeline.launch.profiles import Profile

BANDS_MIN = (10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 360, 480, 720, 960, 1440, 2160, 2880, 4320, 5760, 7200,
             10080)
STARTUP_S = 120.0  # a job's start on a node: Python and torch, CUDA, reading the data
MAX_AUTO_TRIALS_PER_TASK = 32  # a failing node should not take a whole grid with it
DEFAULT_PACK_SIZE = 8  # seeds packed when pack_seeds is asked for without a size (bench row 4's k)
# With a profile's fixed minutes per trial, a pack of k seeds gets the time of ceil(k / 4) trials: packing
# is several times faster per seed, and a task that runs out of time is requeued and resumes.
PACKED_SEEDS_PER_TRIAL_TIME = 4
# Preemptions requeue without limit; time-outs are requeued this often (a long trial spans several), on
# SLURM and locally alike.
MAX_TIMEOUT_REQUEUES = 20


def pack_units(trials: list[Trial], pack_size: int) -> list[list[Trial]]:
    """Split trials into units of training: trials that differ only in their seed in packs of at most
    ``pack_size`` (trained together, ``pipeline.core.packing``), the others alone; in order of first appearance."""
    groups: dict = {}
    for trial in trials:
        key = experiments.of(trial).pack_key(trial.settings)
        groups.setdefault((trial.experiment, key) if key is not None else ("alone", trial.index), []).append(trial)
    size = max(1, pack_size)
    return [members[i : i + size] for members in groups.values() for i in range(0, len(members), size)]


def cell_of(trial: Trial) -> str:
    """A trial's cell in plans: its id without the seed (labels and swept values)."""
    return trial.trial_id.rsplit("-s", 1)[0]


@dataclass
class Unit:
    """Trials trained together (one, or seeds packed), with what they are expected to cost."""

    indices: list[int]
    seconds: float  # estimated wall time of the whole unit
    reserve_s: float  # what a task's time limit keeps for it (the estimate with its margin, or fixed)
    packed: bool = False
    fixed: bool = False  # the profile fixes its minutes: they, not the estimate, measure its work

    @property
    def work_s(self) -> float:
        """How much it fills a task: the estimate, or the minutes the profile fixes."""
        return self.reserve_s if self.fixed else self.seconds


@dataclass
class Task:
    """What one task runs: its units of training, in order (decided here, handed to the task as they are)."""

    units: list[Unit]

    @property
    def indices(self) -> list[int]:
        return [i for unit in self.units for i in unit.indices]

    @property
    def units_indices(self) -> list[list[int]]:
        """The trial indices of each unit: what the array task is given."""
        return [list(unit.indices) for unit in self.units]

    def record(self, job_id: str) -> dict:
        """The task in the submission log: its job id, its trials and, where seeds train together, its units."""
        entry: dict = {"job_id": job_id, "indices": self.indices}
        if any(len(unit.indices) > 1 for unit in self.units):
            entry["units"] = self.units_indices
        return entry

    @property
    def seconds(self) -> float:
        return STARTUP_S + sum(u.seconds for u in self.units)

    @property
    def reserve_s(self) -> float:
        # Minutes a profile fixes are the whole limit of a trial, as they always were.
        startup = 0.0 if all(u.fixed for u in self.units) else STARTUP_S
        return startup + sum(u.reserve_s for u in self.units)


@dataclass
class ArrayPlan:
    """One job array: its tasks and the time limit they share."""

    time_min: int
    tasks: list[Task]
    parallelism: int = 1
    over_limit: list[Task] = field(default_factory=list)  # tasks estimated beyond time_min: requeues carry them

    @property
    def gpu_hours(self) -> float:
        return sum(t.seconds for t in self.tasks) / 3600


@dataclass
class Costing:
    """How one profile prices trials: per experiment and packing, the speed on its device."""

    device: str  # GPU type or "cpu"
    fixed_min: dict  # experiment -> minutes per trial fixed by the profile
    speeds: dict = field(default_factory=dict)

    @classmethod
    def of(cls, profile: Profile) -> Costing:
        device = throughput.gpu_key(profile.gpu_type) if profile.gpus > 0 else "cpu"
        if profile.gpus > 0 and not profile.gpu_type:
            device = "unknown GPU"
        return cls(device, dict(profile.time_limit_min))

    def speed(self, experiment: str, packed: bool) -> throughput.Speed:
        key = (experiment, packed)
        if key not in self.speeds:
            self.speeds[key] = throughput.speed(self.device, experiment, packed)
        return self.speeds[key]

    def unit(self, trials: list[Trial]) -> Unit:
        first = trials[0]
        packed = len(trials) > 1
        speed = self.speed(first.experiment, packed)
        seconds = len(trials) * throughput.trial_seconds(first.settings, speed.rate)
        if first.experiment in self.fixed_min:
            share = -(-len(trials) // PACKED_SEEDS_PER_TRIAL_TIME) if packed else 1
            return Unit([t.index for t in trials], seconds, 60.0 * self.fixed_min[first.experiment] * share, packed,
                        fixed=True)
        return Unit([t.index for t in trials], seconds, seconds * speed.margin, packed)

    def describe(self, experiments_used: list[str], packed: dict[str, bool]) -> list[str]:
        """How each experiment's estimate is made, one line each."""
        lines = []
        for name in experiments_used:
            speed = self.speed(name, packed.get(name, False))
            overhead = f" + {speed.rate.epoch_overhead_s:g} s/epoch" if speed.rate.epoch_overhead_s else ""
            limits = (f"time limits fixed at {self.fixed_min[name]} min per trial by the profile's [time_limit_min]"
                      if name in self.fixed_min else f"time limits x{speed.margin:g}")
            lines.append(f"{name} on {self.device}: {speed.rate.gflops:,.0f} GFLOP/s{overhead}, {speed.basis} "
                         f"{speed.words}; {limits}")
        return lines


def units_of(trials: dict[int, Trial], indices: list[int], pack_seeds: bool, pack_size: int | None) -> list[list[Trial]]:
    chosen = [trials[i] for i in indices]
    if not pack_seeds:
        return [[t] for t in chosen]
    return pack_units(chosen, pack_size or DEFAULT_PACK_SIZE)


def band(minutes: float, maximum: int) -> int:
    for value in BANDS_MIN:
        if value >= minutes:
            return min(value, maximum)
    return maximum


def cost_class(unit: Unit) -> int:
    """The band of a unit's own reserve: units of one class are chunked together and share an array."""
    return band((STARTUP_S + unit.reserve_s) / 60, 10**9)


def tasks_of(units: list[Unit], trials_per_task: int | None, pack_seeds: bool, min_task_s: float,
             maximum_s: float) -> list[Task]:
    if trials_per_task is not None:
        if pack_seeds:  # as always: each pack is a task; the trials that pack with none are chunked
            packs = [Task([u]) for u in units if u.packed]
            alone = [u for u in units if not u.packed]
            return [Task(alone[i : i + trials_per_task]) for i in range(0, len(alone), trials_per_task)] + packs
        return [Task(units[i : i + trials_per_task]) for i in range(0, len(units), trials_per_task)]
    # By cost: units of one class fill tasks up to min_task_s of estimated work, in grid order.
    classes: dict[int, list[Unit]] = {}
    for unit in units:
        classes.setdefault(cost_class(unit), []).append(unit)
    tasks = []
    for members in classes.values():
        current: list[Unit] = []
        for unit in members:
            trials_in = sum(len(u.indices) for u in current)
            full = (trials_in + len(unit.indices) > MAX_AUTO_TRIALS_PER_TASK
                    or sum(u.reserve_s for u in current) + unit.reserve_s > maximum_s)
            if current and full:
                tasks.append(Task(current))
                current = []
            current.append(unit)
            if sum(u.work_s for u in current) >= min_task_s:
                tasks.append(Task(current))
                current = []
        if current:
            tasks.append(Task(current))
    return tasks


def share_parallelism(arrays: list[ArrayPlan], total: int) -> None:
    """At most ``total`` tasks of the grid at once, shared in proportion to each array's GPU-hours (each
    gets at least one, and no more than it has tasks)."""
    remaining, open_arrays = total, list(arrays)
    for array in arrays:
        array.parallelism = 1
    remaining -= len(arrays)
    while remaining > 0 and open_arrays:
        hours = sum(a.gpu_hours for a in open_arrays) or 1.0
        handed = 0
        for array in list(open_arrays):
            want = max(1, int(remaining * array.gpu_hours / hours)) if array.gpu_hours else 1
            give = min(want, len(array.tasks) - array.parallelism, remaining - handed)
            array.parallelism += max(0, give)
            handed += max(0, give)
            if array.parallelism >= len(array.tasks):
                open_arrays.remove(array)
        remaining -= handed
        if handed == 0:
            break


def arrays_of(tasks: list[Task], maximum_min: int, parallelism: int) -> list[ArrayPlan]:
    """Tasks of one cost class share an array whose limit fits the longest of them; classes that come to
    the same limit are one array."""
    def limit(task: Task) -> int:
        return band(math.ceil(task.reserve_s / 60), maximum_min)

    classes: dict[int, list[Task]] = {}
    for task in tasks:
        classes.setdefault(max(cost_class(u) for u in task.units), []).append(task)
    by_limit: dict[int, ArrayPlan] = {}
    for members in classes.values():
        minutes = max(limit(task) for task in members)
        array = by_limit.setdefault(minutes, ArrayPlan(minutes, []))
        array.tasks += members
        array.over_limit += [task for task in members if task.seconds > 60 * minutes]
    for array in by_limit.values():
        order = {index: position for position, index in enumerate(sorted(t.indices[0] for t in array.tasks))}
        array.tasks.sort(key=lambda task: order[task.indices[0]])  # grid order within an array
    arrays = sorted(by_limit.values(), key=lambda a: -a.time_min)  # the longest first: sbatch's likeliest refusal
    share_parallelism(arrays, parallelism)
    return arrays


def over_limit_warnings(arrays: list[ArrayPlan], trials: dict[int, Trial], device: str) -> list[str]:
    """One line per cell whose tasks are estimated beyond their array's limit: requeues carry them."""
    lines = []
    for array in arrays:
        cells: dict[str, list] = {}
        for task in array.over_limit:
            for unit in task.units:
                cells.setdefault(cell_of(trials[unit.indices[0]]), []).append((task, unit))
        for members in cells.values():
            ids = [trials[i].trial_id for _, unit in members for i in unit.indices]
            longest = max(task.seconds for task, _ in members) / 60
            requeues = math.ceil(longest / array.time_min) - 1
            carried = (f"about {requeues} requeue(s) each" if requeues <= MAX_TIMEOUT_REQUEUES else
                       f"{requeues} requeues, more than the {MAX_TIMEOUT_REQUEUES} allowed: they will not finish; "
                       "raise max_time_min or use a faster GPU")
            shown = ", ".join(ids[:2]) + (f", ... ({len(ids)} trials)" if len(ids) > 2 else "")
            lines.append(f"warning: {shown}: estimated at {longest:.0f} min a task on {device}, above the "
                         f"partition's maximum of {array.time_min} min (max_time_min). Their tasks are "
                         f"checkpointable: on time-out SLURM requeues them and they resume from the last "
                         f"checkpointed epoch ({carried}, at most {MAX_TIMEOUT_REQUEUES})")
    return lines


def describe_arrays(arrays: list[ArrayPlan], trials: dict[int, Trial], on_gpu: bool) -> list[str]:
    """The array split, one line per array: tasks, time limit, estimate, parallelism, cells."""
    lines = []
    for number, array in enumerate(arrays, 1):
        cells = list(dict.fromkeys(cell_of(trials[i]) for task in array.tasks for i in task.indices))
        shown = ", ".join(cells[:6]) + (f", ... ({len(cells)} cells)" if len(cells) > 6 else "")
        per_task = sorted({len(task.indices) for task in array.tasks})
        sizes = f"{per_task[0]}" if len(per_task) == 1 else f"{per_task[0]}-{per_task[-1]}"
        longest = max(task.seconds for task in array.tasks) / 60
        hours = f"{array.gpu_hours:.1f} {'GPU' if on_gpu else 'task'}-hours"
        lines.append(f"  array {number}: {len(array.tasks)} task(s) of {sizes} trial(s), --time={array.time_min} "
                     f"(longest task estimated at {longest:.0f} min), at most {array.parallelism} at once, "
                     f"{hours}: {shown}")
    return lines


@dataclass
class Plan:
    """What one submission launches: job arrays (on SLURM; locally one, the worker processes) whose tasks
    run units of trials, with the time limit of each array and how it was estimated."""

    profile: Profile
    arrays: list[ArrayPlan]
    threads: int
    name: str
    estimates: list[str]  # how each experiment's time was estimated, one line each
    warnings: list[str]

    @property
    def tasks(self) -> list[list[int]]:
        return [task.indices for array in self.arrays for task in array.tasks]

    @property
    def trials(self) -> int:
        return sum(map(len, self.tasks))

    def job_name(self, array: ArrayPlan) -> str:
        return self.name if len(self.arrays) == 1 else f"{self.name}-{array.time_min}m"
