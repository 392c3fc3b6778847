"""Command line: ``python -m pipeline COMMAND ...`` (also installed as ``pipeline``).

Every command reports an error as one line on stderr and exits non-zero (2 for bad input); ``--debug``
(or PIPELINE_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import SchedulerError, UserError
from pipeline.folder import ResultsFolder, local_tensorboard, local_wandb
from pipeline.launch.checks import LOCAL_HOURS_LIMIT
from pipeline.settings import CHECKPOINT_EVERY_S, ConfigError, parse_assignments, quoted
from pipeline.trialfile.manifest import entries as manifest_entries
from pipeline.trialfile.manifest import trial_ids as manifest_trial_ids

TENSORBOARD_HELP = ("also write each trial's curves (loss, accuracy, dist_E, distance travelled and step_perp "
                    "per layer) as "
                    "TensorBoard events in OUT/tensorboard/<trial>/: tensorboard --logdir OUT/tensorboard")
# What an interrupted command says (Ctrl-C, or a polite kill where the command turns it into an interrupt).
TRAINING_INTERRUPTED = "interrupted; a trial that was training saved its last epoch and resumes when run again"
LAUNCH_INTERRUPTED = ("interrupted; whatever it launched is recorded in the folder's submissions.jsonl and runs on: "
                      "see `python -m pipeline status --out {out}`")
WANDB_HELP = ("also log each trial's curves (the same as --tensorboard) to Weights & Biases: a run per trial, "
              "grouped by cell, its settings as config, offline in OUT/wandb/ unless WANDB_MODE=online")
DESCRIPTION = """Run the experiments of 'Optimization Dynamics of Equivariant and Augmented Neural Networks'
(TMLR 2025) as grids of trials, on this machine or a SLURM cluster, and aggregate them into tables,
figures and a report. Start with: make demo. Science: docs/science.md."""


def _train(args) -> int:
    from pipeline.experiments import make_trial

    values = parse_assignments(args.set)
    named = {"group": args.group, "mode": args.mode, "variant": args.variant, "seed": args.seed,
             "epochs": args.epochs, "n_samples": args.n_samples, "channels": args.channels, "lr": args.lr,
             "augment": args.augment, "dtype": args.dtype, "device": args.device}
    for key, value in named.items():
        if value is not None:
            values[key] = str(value)
    sinks = _requested_sinks(args)
    trial = make_trial(args.experiment, values)
    if args.out is None:
        from pipeline.run import curve_sinks
        from pipeline.run.runner import ConsoleSink, run_trial

        print("training in this process; nothing is saved (give --out FOLDER to keep a trial file)", flush=True)
        console = ConsoleSink(log=lambda line: print(line, flush=True))
        places = {"tensorboard": local_tensorboard(trial.trial_id), "wandb": local_wandb()}
        if "tensorboard" in sinks:
            print(f"live curves: tensorboard --logdir {places['tensorboard'].parent}", flush=True)
        if "wandb" in sinks:
            print(f"W&B run (offline unless WANDB_MODE says otherwise) in {places['wandb']}", flush=True)
        sink: Any = curve_sinks.wrap(console, sinks, trial, places)
        try:
            run_trial(trial, sink)
        finally:
            if hasattr(sink, "close"):
                sink.close()
        _print_results(trial.experiment, console.results)
        return 0
    from pipeline.launch.grid import Grid
    from pipeline.leases.ownership import guard_folder
    from pipeline.run.execute import execute, install_cancel_handler
    from pipeline.trialfile.manifest import merge, read_manifest, trials_of_manifest, write_manifest

    grid = Grid("train", "pipeline train", "one network trained with `pipeline train`", {}, {}, dict(values))
    lease = guard_folder(args.out)
    try:
        if ResultsFolder(args.out).manifest.exists() and not args.grow:
            manifest = read_manifest(args.out)
            _, added = merge(trials_of_manifest(manifest), [trial])
            if added:
                raise ConfigError(f"trial {trial.trial_id} is not in the grid of {quoted(args.out)}: training it there "
                                  f"would add it to {_grid_of(manifest)}; use another --out, or pass --grow to add it")
        (trial,) = write_manifest(args.out, grid, [trial])
    finally:
        lease.release()
    install_cancel_handler()
    for line in _curve_lines(args.out, sinks):
        print(line, flush=True)
    outcome = _report_outcome(execute(args.out, [trial], force=args.force, sinks=sinks))
    if outcome == 0:
        from pipeline.trialfile.files import read_results_attrs, trial_paths

        _print_results(trial.experiment, read_results_attrs(trial_paths(args.out, trial.trial_id)[0]))
    return outcome


def _print_results(experiment: str, attrs: dict) -> None:
    """What a trial measured after training (Experiment S: at A*), in a few lines; nothing for the others."""
    if not attrs:
        return
    from analysis.results_analyses import summary_lines  # deferred: pandas and matplotlib, for Experiment S only

    print("measured after training:")
    for line in summary_lines(experiment, attrs):
        print(f"  {line}", flush=True)


def _plan(args) -> int:
    from pipeline.launch.grid import load_grid
    from pipeline.launch.plan import describe
    from pipeline.launch.profiles import load_profile

    grid = load_grid(args.exp, parse_assignments(args.set))
    print(describe(grid, load_profile(args.cluster), list_trials=args.trials))
    return 0


def _report_outcome(outcomes: dict[str, str]) -> int:
    busy = [f"{trial_id} {outcome}" for trial_id, outcome in outcomes.items() if outcome.startswith("busy")]
    if busy:
        print("error: " + "; ".join(busy), file=sys.stderr)
        return 1
    return 0


def _grid_of(manifest: dict) -> str:
    count = len(manifest_entries(manifest))
    return f"the {count} trial(s) of grid {manifest.get('grid', '?')}"


def _run_trial(args) -> int:
    """One trial of a results folder. With a folder that has a grid, the trial comes from its manifest;
    ``--exp``/``--set`` must then name trials it has, unless ``--grow`` adds them."""
    from pipeline.launch.grid import load_grid
    from pipeline.leases.ownership import guard_folder
    from pipeline.run.execute import execute, install_cancel_handler
    from pipeline.trialfile.manifest import MANIFEST, merge, read_manifest, select, trials_of_manifest, write_manifest

    sinks = _requested_sinks(args)
    out = args.out
    manifest = read_manifest(out) if ResultsFolder(out).manifest.exists() else None
    if args.exp is None:
        if args.set:
            raise ConfigError("--set needs --exp (the grid it changes); without either, run-trial takes the trial "
                              f"from {quoted(ResultsFolder(out).manifest)}")
        if manifest is None:
            raise ConfigError(f"{quoted(out)} has no {MANIFEST}: give --exp (and any --set) for the trial's grid")
        folder_trials = trials_of_manifest(manifest)
        wanted, added, grid = select(folder_trials, args.index, args.trial), [], None
    else:
        grid = load_grid(args.exp, parse_assignments(args.set))
        trials = grid.trials()
        chosen = select(trials, args.index, args.trial)
        if manifest is None:
            wanted, added = chosen, trials
        else:
            resolved, added = merge(trials_of_manifest(manifest), trials)
            wanted = resolved[trials.index(chosen)]
            if added and not args.grow:
                what = f"grid {grid.name}" + (f" with --set {' '.join(args.set)}" if args.set else "")
                raise ConfigError(f"{what} is not the grid of {quoted(out)}: it would add {len(added)} trial(s) to "
                                  f"{_grid_of(manifest)}; run-trial takes the trial from the folder's manifest (drop "
                                  "--exp and --set), or pass --grow to add them")
    if args.dry_run:
        lines = [f"would run trial {wanted.trial_id} (index {wanted.index}) in {quoted(out)}"]
        if added and manifest is not None:
            lines.append(f"adds {len(added)} trial(s) to {_grid_of(manifest)}")
        print("\n".join(lines + ["nothing was run"]))
        return 0
    if added:
        assert grid is not None  # trials are added only from a grid given on the command line
        lease = guard_folder(out)
        try:
            resolved = write_manifest(out, grid, grid.trials())
        finally:
            lease.release()
        wanted = next(t for t in resolved if t.trial_id == wanted.trial_id)
    install_cancel_handler()
    return _report_outcome(execute(out, [wanted], force=args.force, checkpoint_every_s=args.checkpoint_every,
                                   sinks=sinks))


def _check_workers(args) -> None:
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    if args.trials_per_task is not None and args.trials_per_task < 1:
        raise ConfigError(f"--trials-per-task must be at least 1, got {args.trials_per_task}")


def _launch(out: Path, indices: list[int], args, profile, options) -> tuple[bool, str]:
    """Plan, check and submit ``indices`` with ``options`` (``LaunchOptions``; the caller holds the folder
    guard); returns whether to wait, and the launch's lines. The caller prints them, with what it has to
    say, once the launch is recorded and the folder's guard released: a reader that goes away (``| head``)
    then stops nothing half-way. The checks before the queue (``pipeline.launch.checks``: storage, hours on
    this machine) refuse it in one line before anything is launched."""
    from pipeline.launch import checks
    from pipeline.launch.submission import plan_submission, submit
    from pipeline.trialfile.manifest import read_manifest, trials_of_manifest

    plan = plan_submission(out, indices, profile, options.trials_per_task, options.workers, options.pack_seeds)
    trials = trials_of_manifest(read_manifest(out))
    hours = checks.check_local_hours(plan, getattr(args, "allow_long_local", False))
    said = ([hours] if hours else []) + [checks.storage_check(out, [trials[i] for i in indices])]
    for warning in plan.warnings:
        print(warning, file=sys.stderr)
    submit(out, plan, log=said.append, options=options)
    said += _curve_lines(out, options.sinks)
    from pipeline.launch.backends import backend_of

    return (args.wait if args.wait is not None else backend_of(profile).waits), "\n".join(said)


def _curve_lines(out: Path, sinks) -> list[str]:
    folder = ResultsFolder(out)
    lines = []
    if "tensorboard" in sinks:
        lines.append(f"live curves: tensorboard --logdir {quoted(folder.tensorboard)}")
    if "wandb" in sinks:
        lines.append(f"W&B runs (offline unless WANDB_MODE says otherwise) in {quoted(folder.wandb)}: "
                     f"wandb sync {quoted(folder.wandb)}/wandb/offline-run-* uploads them")
    return lines


def _requested_sinks(args) -> tuple[str, ...]:
    """The curve sinks the command line asks for (``--tensorboard``, ``--wandb``), checked to be installed."""
    from pipeline.run import curve_sinks

    names = tuple(name for name in curve_sinks.SINKS if getattr(args, name, False))
    curve_sinks.check_available(names)
    return names


def _task_shape(args, launch_hints: dict) -> tuple[int | None, bool]:
    """Trials per task (None: by cost) and seed packing, from the command line, else the grid's [launch]."""
    per_task = args.trials_per_task or launch_hints.get("trials_per_task")
    pack_seeds = args.pack_seeds if args.pack_seeds is not None else bool(launch_hints.get("pack_seeds", False))
    return (int(per_task) if per_task is not None else None), pack_seeds


def _submit_options(args, grid):
    from pipeline.launch.submission import LaunchOptions

    per_task, pack_seeds = _task_shape(args, grid.launch)
    return LaunchOptions(_requested_sinks(args), per_task, pack_seeds, args.workers,
                         tuple(sorted(grid.overrides.items())))


def _follow(out: Path, wait: bool, launched: set[int] | None = None) -> int:
    """Wait for the grid where asked; the exit status says whether the trials ``launched`` (default: all)
    completed."""
    from pipeline.launch.monitor import format_status, gather, wait_for

    follow = f"python -m pipeline status --out {quoted(out)}"
    if not wait:
        print(f"follow it with: {follow}")
        return 0
    try:
        wait_for(out)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the grid goes on. Follow it with `{follow}`, stop it with "
              f"`python -m pipeline cancel --out {quoted(out)}`", file=sys.stderr)
        return 130
    states = gather(out)
    print(format_status(states, only_unfinished=True))
    return 1 if any(s.state != "complete" for s in states if launched is None or s.index in launched) else 0


def _refuse_unknown(states, force: bool) -> None:
    """Refuse to submit trials whose state cannot be told, saying why the first of them cannot (squeue did
    not answer, a lease that cannot be read or proven, a launch whose job ids were not recorded)."""
    unknown = [s for s in states if s.state == "unknown"]
    if unknown and not force:
        raise SchedulerError(f"{len(unknown)} trial(s) may still be queued or running, which cannot be told here "
                             f"(e.g. {unknown[0].trial_id}: {unknown[0].detail}); submitting them again could run them "
                             "twice. Retry when it can be told, or pass --force")


def _submit(args) -> int:
    from pipeline.launch import checks
    from pipeline.launch.grid import load_grid
    from pipeline.launch.monitor import gather
    from pipeline.launch.profiles import load_profile
    from pipeline.launch.stop_signals import raising_stop_signals
    from pipeline.launch.submission import manifest_restored_on_failure
    from pipeline.leases.ownership import guard_folder
    from pipeline.trialfile.manifest import write_manifest

    _check_workers(args)
    grid = load_grid(args.exp, parse_assignments(args.set))
    profile = load_profile(args.cluster)
    options = _submit_options(args, grid)
    checks.check_devices(grid.trials(), profile)  # before anything is written: a refusal leaves the folder as it was
    if args.dry_run:
        return _dry_run(args, grid, profile, options)
    out = args.out
    created = not Path(out).exists()
    with raising_stop_signals():  # a polite kill ends the command with the guard released, as Ctrl-C does
        lease = guard_folder(out)
        try:
            with manifest_restored_on_failure(out):
                trials = write_manifest(out, grid, grid.trials())
                mine = {t.index for t in trials}
                states = gather(out)
                _refuse_unknown([s for s in states if s.index in mine], args.force)
                todo = [s.index for s in states
                        if s.index in mine and s.state not in ("complete", "running", "queued")]
                said = []
                if len(todo) < len(mine):
                    said.append(f"{len(mine) - len(todo)} trials already complete, running or queued are not "
                                "submitted again")
                if not todo:
                    print("\n".join(said + ["nothing to submit"]))
                    return 0
                wait, launched = _launch(out, todo, args, profile, options)
        finally:
            lease.release()
            if created:  # a refused first submission leaves no empty folder behind
                with contextlib.suppress(OSError):
                    Path(out).rmdir()
    print("\n".join(said + [launched]), flush=True)
    return _follow(out, wait)


def _checks_rehearsed(out: Path, trials: list, plan, allow_long_local: bool) -> list[str]:
    """What the checks before the queue (``pipeline.launch.checks``) say in a dry run: their lines, or that
    the submission would be refused and why."""
    from pipeline.launch import checks

    lines = []
    for check in (lambda: checks.check_local_hours(plan, allow_long_local), lambda: checks.storage_check(out, trials)):
        try:
            line = check()
        except ConfigError as refused:
            line = f"a submission would be refused: {refused}"
        if line:
            lines.append(line)
    return lines


def _dry_run(args, grid, profile, options) -> int:
    from pipeline.launch.submission import describe_plan, plan_submission
    from pipeline.trialfile.manifest import merge, read_manifest, trials_of_manifest

    trials = grid.trials()
    growing = ""
    if ResultsFolder(args.out).manifest.exists():
        manifest = read_manifest(args.out)
        trials, added = merge(trials_of_manifest(manifest), trials)
        if added:
            growing = f"adds {len(added)} trial(s) to {_grid_of(manifest)} in {quoted(args.out)}"
    plan = plan_submission(args.out, [t.index for t in trials], profile, options.trials_per_task, options.workers,
                           options.pack_seeds, trials=trials, name=grid.name)
    lines = describe_plan(args.out, plan, trials).split("\n")
    lines[1:1] = _checks_rehearsed(args.out, trials, plan, args.allow_long_local)
    print("\n".join(([growing] if growing else []) + lines))
    return 0


def _smoke(args) -> int:
    """``make smoke``: the cluster-smoke grid on the profile's nodes, waited for, then its verdict on one screen
    (``pipeline.launch.cluster_check``). A folder whose trials are complete gets the verdict of that run again."""
    from pipeline.launch.cluster_check import GRID, verdict
    from pipeline.launch.profiles import load_profile

    profile = load_profile(args.cluster)
    args.exp, args.wait, args.dry_run = GRID, True, False
    for name in ("workers", "trials_per_task", "pack_seeds"):
        setattr(args, name, None)
    args.tensorboard = args.wandb = args.force = args.allow_long_local = False
    code = _submit(args)
    found = verdict(args.out, profile)
    print("\n" + "\n".join(found.lines), flush=True)
    return 0 if found.ok and code == 0 else 1


def _status(args) -> int:
    from pipeline.launch.monitor import format_status, gather

    if args.watch is not None:
        from pipeline.launch.watch import watch

        if args.watch <= 0:
            raise ConfigError(f"--watch takes a number of seconds > 0, got {args.watch:g}")
        try:
            watch(args.out, args.watch, only_unfinished=args.brief)
        except KeyboardInterrupt:
            print("stopped watching; the grid goes on", file=sys.stderr)
        return 0
    print(format_status(gather(args.out), only_unfinished=args.brief))
    return 0


def _logs(args) -> int:
    from pipeline.launch.watch import show_log

    try:
        return show_log(args.out, args.trial_id, follow=args.follow)
    except KeyboardInterrupt:
        return 0


def _last_profile(out: Path, cluster: str | None):
    """The profile a command acts on: --cluster, else the one of the grid's last submission."""
    from pipeline.launch.profiles import load_profile
    from pipeline.launch.recorded_profile import profile_of_record
    from pipeline.launch.records import read_submissions

    if cluster is not None:
        return load_profile(cluster)
    submissions = read_submissions(out)
    if not submissions:
        raise ConfigError(f"{quoted(out)} has no submission to take the cluster profile from; pass --cluster")
    return profile_of_record(submissions[-1])  # a profile is code: taken from the folder only with proof


RESUBMITTABLE = ("failed", "missing", "cancelled", "inconsistent")


def _chosen_states(text: str | None) -> set[str] | None:
    if text is None:
        return None
    from pipeline.settings import did_you_mean

    chosen = {word.strip() for word in text.split(",") if word.strip()}
    for word in chosen:
        if word not in RESUBMITTABLE:
            raise ConfigError(f"unknown state {word!r} in --states{did_you_mean(word, RESUBMITTABLE)}; accepted: "
                              f"{', '.join(RESUBMITTABLE)}")
    return chosen


def _chosen_trials(text: str | None, manifest: dict) -> list[str] | None:
    if text is None:
        return None
    from pipeline.settings import did_you_mean

    known = manifest_trial_ids(manifest)
    chosen = list(dict.fromkeys(word.strip() for word in text.split(",") if word.strip()))
    for word in chosen:
        if word not in known:
            raise ConfigError(f"unknown trial {word!r} in --trials{did_you_mean(word, known)}; accepted: the folder's "
                              f"trial ids, {known[0]} ... {known[-1]} (see `pipeline status`)")
    return chosen


def _resubmission_options(args, recorded, hints: dict):
    """The options a trial is resubmitted with: those of the submission that last launched it (for a record
    older than recorded options: the grid's [launch], no curve sinks), each changed where the command line
    says so."""
    from dataclasses import replace

    from pipeline.launch.submission import LaunchOptions
    from pipeline.run import curve_sinks

    if recorded is None:
        per_task = hints.get("trials_per_task")
        recorded = LaunchOptions((), int(per_task) if per_task else None, bool(hints.get("pack_seeds", False)))
    sinks = [name for name in curve_sinks.SINKS
             if (getattr(args, name) is None and name in recorded.sinks) or getattr(args, name) is True]
    curve_sinks.check_available(sinks)
    return replace(recorded, sinks=tuple(sinks),
                   trials_per_task=args.trials_per_task or recorded.trials_per_task,
                   pack_seeds=recorded.pack_seeds if args.pack_seeds is None else args.pack_seeds,
                   workers=args.workers or recorded.workers)


def _resubmit(args) -> int:
    from pipeline.launch import checks
    from pipeline.launch.monitor import gather, needing_resubmission
    from pipeline.launch.records import latest_submission_of
    from pipeline.launch.stop_signals import raising_stop_signals
    from pipeline.launch.submission import LaunchOptions, describe_plan, plan_submission
    from pipeline.leases.ownership import guard_folder
    from pipeline.trialfile.manifest import read_manifest, trials_of_manifest

    _check_workers(args)
    out = args.out
    manifest = read_manifest(out)  # a folder without a (readable) grid says so first
    states_wanted = _chosen_states(args.states)
    trials_wanted = _chosen_trials(args.trials, manifest)
    profile = _last_profile(out, args.cluster)
    trials = trials_of_manifest(manifest)
    with raising_stop_signals():  # a polite kill ends the command with the guard released, as Ctrl-C does
        lease = None if args.dry_run else guard_folder(out)
        try:
            states = gather(out)
            _refuse_unknown(states, args.force)
            again = needing_resubmission(states, include_diverged=args.force)
            said = [f"not resubmitted: {s.trial_id} ({s.detail}); it would diverge again (--force resubmits it)"
                    for s in states if s.state == "failed" and s.detail.startswith("Diverged") and s not in again
                    and (trials_wanted is None or s.trial_id in trials_wanted)]
            if trials_wanted is not None:
                said += [f"not resubmitted: {s.trial_id} is {s.state} ({s.detail})" for s in states
                         if s.trial_id in trials_wanted and s not in again and not s.detail.startswith("Diverged")]
                again = [s for s in again if s.trial_id in trials_wanted]
            if states_wanted is not None:
                again = [s for s in again if s.state in states_wanted]
            if not again:
                chosen = " of those chosen" if trials_wanted is not None or states_wanted is not None else ""
                print("\n".join(said + [f"nothing to resubmit{chosen}: every trial is complete, running or queued"
                                        if not chosen else f"nothing to resubmit{chosen}"]))
                return 0
            checks.check_devices([trials[s.index] for s in again], profile)
            latest = latest_submission_of(out)
            groups: dict = {}
            for s in again:
                record = latest.get(s.index)
                recorded = LaunchOptions.of_record(record) if record is not None else None
                options = _resubmission_options(args, recorded, manifest.get("launch", {}))
                if record is None:
                    when = "never submitted: the grid's [launch]"
                elif recorded is None:
                    when = "its submission recorded no options: the grid's [launch]"
                else:
                    overrides = " ".join(f"{key}={value}" for key, value in recorded.overrides)
                    when = f"as submitted at {record.get('submitted_at', '?')}" + (f", with --set {overrides}"
                                                                                     if overrides else "")
                groups.setdefault(options, (when, []))[1].append(s)
            said += [f"resubmitting {s.trial_id} ({s.state}: {s.detail})" for s in again]
            said.append(f"on profile {profile.name}")
            launches = []
            for options, (when, members) in groups.items():
                said.append(f"{len(members)} trial(s) with {options.words()} ({when})")
                if args.dry_run:
                    indices = [s.index for s in members]
                    plan = plan_submission(out, indices, profile, options.trials_per_task, options.workers,
                                           options.pack_seeds)
                    described = describe_plan(out, plan, trials)
                    said.append(described.replace("dry run on profile", "would resubmit on profile", 1))
                    said += _checks_rehearsed(out, [trials[i] for i in indices], plan, args.allow_long_local)
                else:
                    launches.append(_launch(out, [s.index for s in members], args, profile, options))
            if args.dry_run:
                print("\n".join(said + ["dry run: nothing was resubmitted"]))
                return 0
        finally:
            if lease is not None:
                lease.release()
    print("\n".join(said + [launched for _, launched in launches]), flush=True)
    return _follow(out, any(wait for wait, _ in launches), {s.index for s in again})


def _cancel(args) -> int:
    from pipeline.launch.monitor import cancel

    cancel(args.out)
    return 0


def _aggregate(args) -> int:
    from analysis import aggregate

    result = aggregate(args.out)
    print("\n".join(result.verdict_lines))
    print(f"report: {result.report}")
    return 0


def _add_launch_arguments(parser: argparse.ArgumentParser, cluster_default: str | None) -> None:
    parser.add_argument("--out", required=True, type=Path, help="results folder")
    where = ("default: the profile of the grid's last submission" if cluster_default is None
             else f"default: {cluster_default}")
    parser.add_argument("--cluster", default=cluster_default,
                        help=f"cluster profile in slurm/profiles or a .toml file ({where})")
    parser.add_argument("--workers", type=int,
                        help="local executor: trials at a time (default: the core count, at most 8)")
    parser.add_argument("--trials-per-task", type=int,
                        help="trials run one after the other by one array task (default: the grid's [launch], "
                             "else by cost: cheap trials packed into tasks of about the profile's min_task_min)")
    parser.add_argument("--pack-seeds", action=argparse.BooleanOptionalAction, default=None,
                        help="train a task's trials that differ only in their seed together "
                             "(default: the grid's [launch] pack_seeds)")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                        help="block until the grid has finished (default: yes locally, no on SLURM)")
    parser.add_argument("--force", action="store_true",
                        help="submit even if the queue cannot be read (and resubmit diverged trials)")
    parser.add_argument("--allow-long-local", action="store_true",
                        help="run on this machine a grid estimated at more than "
                             f"{LOCAL_HOURS_LIMIT:g} CPU-hours (without it: refused, naming --cluster)")
    if cluster_default is None:  # resubmit: as the trial's submission recorded, unless told
        parser.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                            help=f"{TENSORBOARD_HELP} (default: as the trial's submission did)")
        parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=None,
                            help=f"{WANDB_HELP} (default: as the trial's submission did)")
    else:
        parser.add_argument("--tensorboard", action="store_true", help=TENSORBOARD_HELP)
        parser.add_argument("--wandb", action="store_true", help=WANDB_HELP)


def _add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exp", required=True, metavar="NAME_OR_PATH",
                        help="a grid preset in jobs/ (e.g. demo, paper-groups) or a .toml file")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                        help="override a grid value; a,b,c makes an axis (repeatable)")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Appends an option's real default to its help: never "(default: None)" for an option whose default
    comes from elsewhere (the help says where), nor for flags and empty lists."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, [], argparse.SUPPRESS) or not action.option_strings
                or isinstance(action, argparse._HelpAction)):
            return text
        return f"{text} (default: {default})"


def _setting_help(experiment: str, name: str, words: str, choices=None) -> str:
    """Help for an option that sets a trial setting: its choices and the settings' own default."""
    from pipeline import experiments

    settings = experiments.get(experiment).settings_type()
    accepted = f"{', '.join(map(str, choices))}; " if choices else ""
    return f"{words}: {accepted}default {getattr(settings, name)} ({experiment})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also PIPELINE_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help, handler, interrupted="interrupted"):
        sub = commands.add_parser(name, help=help, description=help, formatter_class=_Formatter)
        sub.set_defaults(handler=handler, interrupted=interrupted)
        return sub

    train = command("train", "train one network, one line per epoch (a trial file only with --out)", _train,
                    TRAINING_INTERRUPTED)
    from pipeline import experiments
    from pipeline.settings import DTYPES, MODES

    GROUP_NAMES, VARIANTS = experiments.get("groups").cell_names, experiments.get("cnn").cell_names

    train.add_argument("--experiment", default="groups", help=f"one of {', '.join(experiments.REGISTRY)}")
    train.add_argument("--group", help=_setting_help("groups", "group", "the group", GROUP_NAMES))
    train.add_argument("--mode", help=_setting_help("groups", "mode", "the training mode", MODES))
    train.add_argument("--variant", help=_setting_help("cnn", "variant", "the CNN variant", VARIANTS))
    train.add_argument("--seed", type=int,
                       help=_setting_help("groups", "seed", "seed of the initial point and the data order"))
    train.add_argument("--epochs", type=int, help=_setting_help("groups", "epochs", "epochs of training"))
    train.add_argument("--n-samples", type=int, help=_setting_help("groups", "n_samples", "MNIST samples"))
    train.add_argument("--channels", type=int, help=_setting_help("groups", "channels", "channels of the network"))
    train.add_argument("--lr", type=float, help=_setting_help("groups", "lr", "learning rate"))
    train.add_argument("--augment", help=_setting_help("groups", "augment", "how Aug averages: orbit or sampled:P"))
    train.add_argument("--dtype", help=_setting_help("groups", "dtype", "floating point type", DTYPES))
    train.add_argument("--device", help=_setting_help("groups", "device", "where to train: auto, cpu, cuda or cuda:N"))
    train.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                       help="any trial setting (repeatable; see pipeline/experiments/)")
    train.add_argument("--out", type=Path, help="results folder to keep the trial file in (without it nothing is saved)")
    train.add_argument("--force", action="store_true", help="with --out: rerun a trial that is already complete")
    train.add_argument("--grow", action="store_true",
                       help="with --out: add the trial to a folder whose grid does not have it (default: refused)")
    train.add_argument("--tensorboard", action="store_true",
                       help="also write TensorBoard curves: OUT/tensorboard/<trial>/ (without --out: ./tensorboard/)")
    train.add_argument("--wandb", action="store_true",
                       help="also log the curves to a Weights & Biases run, offline unless WANDB_MODE=online: "
                            "OUT/wandb/ (without --out: ./wandb/)")

    plan = command("plan", "a grid's trials by cell: compute, estimated time and GPU-hours on a profile, storage, "
                           "and the job arrays a submission would make", _plan)
    _add_grid_arguments(plan)
    plan.add_argument("--cluster", default="local",
                      help="cluster profile whose device the estimates are for (slurm/profiles or a .toml file)")
    plan.add_argument("--trials", action="store_true", help="list every trial instead of a summary by cell")

    run = command("run-trial", "run one trial of a results folder in this process (what one array task executes)",
                  _run_trial, TRAINING_INTERRUPTED)
    run.add_argument("--exp", metavar="NAME_OR_PATH",
                     help="the trial's grid (default: the folder's own, from its manifest.json; needed for a new "
                          "folder)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                     help="override a value of --exp's grid (repeatable; default: none)")
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="position in the folder's grid (with --exp: in that grid)")
    which.add_argument("--trial", metavar="ID", help="trial id, e.g. rot-aug-s007")
    run.add_argument("--out", required=True, type=Path, help="results folder")
    run.add_argument("--grow", action="store_true",
                     help="let --exp/--set add trials the folder's grid does not have (default: refused)")
    run.add_argument("--dry-run", action="store_true",
                     help="say which trial would run, and what it would add; run nothing")
    run.add_argument("--force", action="store_true", help="rerun a complete trial")
    run.add_argument("--checkpoint-every", type=float, default=CHECKPOINT_EVERY_S, metavar="SECONDS",
                     help="write the resume checkpoint at most this often (0: every epoch)")
    run.add_argument("--tensorboard", action="store_true", help=TENSORBOARD_HELP)
    run.add_argument("--wandb", action="store_true", help=WANDB_HELP)

    submit = command("submit", "submit a grid as a job array (SLURM) or run it on this machine", _submit,
                     LAUNCH_INTERRUPTED)
    _add_grid_arguments(submit)
    _add_launch_arguments(submit, "local")
    submit.add_argument("--dry-run", action="store_true",
                        help="print the tasks and, for SLURM, the array's sbatch script; submit nothing")

    smoke = command("smoke", "does this cluster run the pipeline? The cluster-smoke grid (every experiment at toy size "
                             "and one epoch at the paper's width) on a profile's nodes, waited for, then a verdict: "
                             "CUDA seen, GPU model, driver, speed against pipeline/launch/throughput.py", _smoke)
    smoke.add_argument("--cluster", required=True, help="cluster profile in slurm/profiles or a .toml file")
    smoke.add_argument("--out", required=True, type=Path, help="results folder (make smoke: results/smoke-CLUSTER)")
    smoke.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                       help="override a value of the cluster-smoke grid (repeatable)")

    status = command("status", "the state of every trial of a results folder", _status)
    status.add_argument("--out", required=True, type=Path, help="results folder")
    status.add_argument("--brief", action="store_true", help="list only trials that are not complete")
    status.add_argument("--watch", nargs="?", type=float, const=10.0, default=None, metavar="SECONDS",
                        help="redraw every SECONDS (10 if not given) until nothing is queued or running")

    logs = command("logs", "print a trial's log (OUT/logs/TRIAL_ID.log); -f follows it while the trial runs", _logs)
    logs.add_argument("trial_id", metavar="TRIAL_ID", help="e.g. rot-aug-s007 (see `pipeline status`)")
    logs.add_argument("--out", required=True, type=Path, help="results folder")
    logs.add_argument("-f", "--follow", action="store_true", help="go on printing until the trial stops (Ctrl-C)")

    resubmit = command("resubmit", "resubmit the missing, failed, stopped or cancelled trials, each with the options "
                                   "(curve sinks, trials per task, seed packing) of the submission that launched it",
                       _resubmit, LAUNCH_INTERRUPTED)
    _add_launch_arguments(resubmit, None)
    resubmit.add_argument("--dry-run", action="store_true",
                          help="say which trials would be resubmitted, with which options and tasks; submit nothing")
    resubmit.add_argument("--trials", metavar="ID,...", help="only these trials (default: every one that needs it)")
    resubmit.add_argument("--states", metavar="STATE,...",
                          help=f"only trials in these states, of {', '.join(RESUBMITTABLE)} (default: all of them)")

    cancel = command("cancel", "stop the grid: cancel its SLURM tasks, stop its local processes", _cancel)
    cancel.add_argument("--out", required=True, type=Path, help="results folder")

    aggregate = command("aggregate", "tables, figures and the reproduction report of a results folder", _aggregate)
    aggregate.add_argument("--out", required=True, type=Path, help="results folder")
    return parser


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(error, UserError) and error.message_alone:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    from pipeline.launch.stop_signals import LaunchStopped
    from pipeline.run.execute import Cancelled

    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("PIPELINE_DEBUG", "") not in ("", "0")
    try:
        return args.handler(args)
    except Cancelled as cancelled:
        print(f"stopped: {cancelled}; the trial saved its last epoch and resumes when run again", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``status | head``): nothing more to say, and nothing to say it to.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except LaunchStopped as stopped:
        # The launch is recorded and runs on: say what it launched, then that the command stopped.
        if stopped.said:
            print("\n".join(stopped.said), flush=True)
        out = quoted(stopped.out_dir or getattr(args, "out", "OUT"))
        print(f"{stopped} once the launch was recorded: what it launched runs on; follow it with "
              f"`python -m pipeline status --out {out}`, stop it with `python -m pipeline cancel --out {out}`",
              file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt as error:
        if debug:
            raise
        print(args.interrupted.format(out=quoted(getattr(args, "out", "OUT"))), file=sys.stderr)
        return 128 + getattr(error, "signum", signal.SIGINT)
    except Exception as error:
        if debug:
            raise
        # Errors the pipeline raises on purpose say all there is to say; a traceback helps with the others.
        expected = isinstance(error, UserError)
        hint = "" if expected else " (--debug shows the traceback)"
        print(f"error: {one_line(error)}{hint}", file=sys.stderr)
        return error.exit_code if isinstance(error, UserError) else 1
