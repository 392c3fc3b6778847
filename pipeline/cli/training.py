"""``train`` (one network, in this process or into a results folder) and ``run-trial`` (one trial of a results
folder: what an array task runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import experiments
from pipeline.cli.common import curve_lines, grid_of, report_outcome, requested_sinks
from pipeline.experiments import Trial, make_trial
from pipeline.folder import ResultsFolder, local_tensorboard, local_wandb
from pipeline.launch.grid import Grid, load_grid
from pipeline.leases.ownership import guard_folder
from pipeline.run import curve_sinks
from pipeline.settings import ConfigError, parse_assignments, quoted
from pipeline.trialfile.manifest import MANIFEST, merge, read_manifest, select, trials_of_manifest, write_manifest


def train_flags() -> dict[str, tuple[str, str]]:
    """The options of ``train`` that set a trial setting: setting -> (the experiment that declares it, the words
    of its help), each experiment's ``train_flags`` in the registry's order, a setting named once."""
    flags: dict[str, tuple[str, str]] = {}
    for name, experiment in experiments.REGISTRY.items():
        for setting, words in experiment.train_flags.items():
            flags.setdefault(setting, (name, words))
    return flags


def train_command(args: argparse.Namespace) -> int:
    values = parse_assignments(args.set)
    for key in train_flags():
        value = getattr(args, key)
        if value is not None:
            values[key] = str(value)
    sinks = requested_sinks(args)
    trial = make_trial(args.experiment, values)
    if args.out is None:
        return _train_here(trial, sinks)
    return _train_into(args.out, trial, values, sinks, force=args.force, grow=args.grow)


def _train_here(trial: Trial, sinks: tuple[str, ...]) -> int:
    """``train`` without --out: in this process, one line per epoch, nothing saved."""
    from pipeline.run.runner import ConsoleSink, run_trial  # deferred: torch, kept out of the command line's start

    print("training in this process; nothing is saved (give --out FOLDER to keep a trial file)", flush=True)
    console = ConsoleSink(log=lambda line: print(line, flush=True))
    places = {"tensorboard": local_tensorboard(trial.trial_id), "wandb": local_wandb()}
    if "tensorboard" in sinks:
        print(f"live curves: tensorboard --logdir {places['tensorboard'].parent}", flush=True)
    if "wandb" in sinks:
        print(f"W&B run (offline unless WANDB_MODE says otherwise) in {places['wandb']}", flush=True)
    sink = curve_sinks.wrap(console, sinks, trial, places)
    try:
        run_trial(trial, sink)
    finally:
        sink.close()
    _print_results(trial.experiment, console.results)
    return 0


def _train_into(out: Path, trial: Trial, values: dict[str, str], sinks: tuple[str, ...], force: bool,
                grow: bool) -> int:
    """``train --out``: the trial into its file in a results folder, whose grid must have it unless ``grow``."""
    # deferred: torch (the trainer), kept out of the command line's start
    from pipeline.run.execute import execute, install_cancel_handler
    from pipeline.trialfile.files import read_results_attrs, trial_paths  # deferred: h5py, as above

    grid = Grid("train", "pipeline train", "one network trained with `pipeline train`", {}, {}, dict(values))
    lease = guard_folder(out)
    try:
        if ResultsFolder(out).manifest.exists() and not grow:
            manifest = read_manifest(out)
            _, added = merge(trials_of_manifest(manifest), [trial])
            if added:
                raise ConfigError(f"trial {trial.trial_id} is not in the grid of {quoted(out)}: training it there "
                                  f"would add it to {grid_of(manifest)}; use another --out, or pass --grow to add it")
        (trial,) = write_manifest(out, grid, [trial])
    finally:
        lease.release()
    install_cancel_handler()
    for line in curve_lines(out, sinks):
        print(line, flush=True)
    outcome = report_outcome(execute(out, [trial], force=force, sinks=sinks))
    if outcome == 0:
        _print_results(trial.experiment, read_results_attrs(trial_paths(out, trial.trial_id)[0]))
    return outcome


def _print_results(experiment: str, attrs: dict) -> None:
    """What a trial measured after training (Experiment S: at A*), in a few lines; nothing for the others."""
    if not attrs:
        return
    from analysis.results_analyses import summary_lines  # deferred: pandas and matplotlib, for Experiment S only

    print("measured after training:")
    for line in summary_lines(experiment, attrs):
        print(f"  {line}", flush=True)


def _trial_to_run(args: argparse.Namespace, manifest: dict | None) -> tuple[Trial, list[Trial], Grid | None]:
    """The trial ``run-trial`` names, the trials it would add to the folder's grid, and the grid they come from
    (None: the folder's own)."""
    out = args.out
    if args.exp is None:
        if args.set:
            raise ConfigError("--set needs --exp (the grid it changes); without either, run-trial takes the trial "
                              f"from {quoted(ResultsFolder(out).manifest)}")
        if manifest is None:
            raise ConfigError(f"{quoted(out)} has no {MANIFEST}: give --exp (and any --set) for the trial's grid")
        return select(trials_of_manifest(manifest), args.index, args.trial), [], None
    grid = load_grid(args.exp, parse_assignments(args.set))
    trials = grid.trials()
    chosen = select(trials, args.index, args.trial)
    if manifest is None:
        return chosen, trials, grid
    resolved, added = merge(trials_of_manifest(manifest), trials)
    if added and not args.grow:
        what = f"grid {grid.name}" + (f" with --set {' '.join(args.set)}" if args.set else "")
        raise ConfigError(f"{what} is not the grid of {quoted(out)}: it would add {len(added)} trial(s) to "
                          f"{grid_of(manifest)}; run-trial takes the trial from the folder's manifest (drop "
                          "--exp and --set), or pass --grow to add them")
    return resolved[trials.index(chosen)], added, grid


def run_trial_command(args: argparse.Namespace) -> int:
    """One trial of a results folder. With a folder that has a grid, the trial comes from its manifest;
    ``--exp``/``--set`` must then name trials it has, unless ``--grow`` adds them."""
    from pipeline.run.execute import execute, install_cancel_handler  # deferred: torch (the trainer)

    sinks = requested_sinks(args)
    out = args.out
    manifest = read_manifest(out) if ResultsFolder(out).manifest.exists() else None
    wanted, added, grid = _trial_to_run(args, manifest)
    if args.dry_run:
        lines = [f"would run trial {wanted.trial_id} (index {wanted.index}) in {quoted(out)}"]
        if added and manifest is not None:
            lines.append(f"adds {len(added)} trial(s) to {grid_of(manifest)}")
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
    return report_outcome(execute(out, [wanted], force=args.force, checkpoint_every_s=args.checkpoint_every,
                                  sinks=sinks))
