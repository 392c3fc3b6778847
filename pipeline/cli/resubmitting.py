"""``resubmit``: the trials that nothing will complete, each with the options of the submission that launched
it (or as the command line changes them), grouped into one launch per set of options."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cli.common import check_workers, follow, refuse_unknown
from pipeline.cli.launching import checks_rehearsed, launch
from pipeline.experiments import Trial
from pipeline.launch import checks
from pipeline.launch.profiles import Profile, load_profile
from pipeline.launch.recorded_profile import profile_of_record
from pipeline.launch.records import latest_submission_of, read_submissions
from pipeline.launch.stop_signals import raising_stop_signals
from pipeline.launch.submission import LaunchOptions, describe_plan, plan_submission
from pipeline.leases.ownership import guard_folder
from pipeline.run import curve_sinks
from pipeline.settings import ConfigError, did_you_mean, quoted
from pipeline.trialfile.manifest import read_manifest, trials_of_manifest
from pipeline.trialfile.manifest import trial_ids as manifest_trial_ids

if TYPE_CHECKING:  # status reads the trial files (h5py): named for the checker only
    from pipeline.launch.monitor import TrialState


def last_profile(out: Path, cluster: str | None) -> Profile:
    """The profile a command acts on: --cluster, else the one of the grid's last submission."""
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
    chosen = {word.strip() for word in text.split(",") if word.strip()}
    for word in chosen:
        if word not in RESUBMITTABLE:
            raise ConfigError(f"unknown state {word!r} in --states{did_you_mean(word, RESUBMITTABLE)}; accepted: "
                              f"{', '.join(RESUBMITTABLE)}")
    return chosen


def _chosen_trials(text: str | None, manifest: dict) -> list[str] | None:
    if text is None:
        return None
    known = manifest_trial_ids(manifest)
    chosen = list(dict.fromkeys(word.strip() for word in text.split(",") if word.strip()))
    for word in chosen:
        if word not in known:
            raise ConfigError(f"unknown trial {word!r} in --trials{did_you_mean(word, known)}; accepted: the folder's "
                              f"trial ids, {known[0]} ... {known[-1]} (see `pipeline status`)")
    return chosen


def _resubmission_options(args: argparse.Namespace, recorded: LaunchOptions | None, hints: dict) -> LaunchOptions:
    """The options a trial is resubmitted with: those of the submission that last launched it (for a record
    older than recorded options: the grid's [launch], no curve sinks), each changed where the command line
    says so."""
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


def _to_resubmit(states: list[TrialState], force: bool, trials_wanted: list[str] | None,
                 states_wanted: set[str] | None) -> tuple[list[TrialState], list[str]]:
    """The trials to resubmit, of those chosen, and what is said of the chosen ones that are not."""
    from pipeline.launch.monitor import needing_resubmission  # deferred: h5py (status reads the trial files)

    again = needing_resubmission(states, include_diverged=force)
    said = [f"not resubmitted: {s.trial_id} ({s.detail}); it would diverge again (--force resubmits it)"
            for s in states if s.state == "failed" and s.detail.startswith("Diverged") and s not in again
            and (trials_wanted is None or s.trial_id in trials_wanted)]
    if trials_wanted is not None:
        said += [f"not resubmitted: {s.trial_id} is {s.state} ({s.detail})" for s in states
                 if s.trial_id in trials_wanted and s not in again and not s.detail.startswith("Diverged")]
        again = [s for s in again if s.trial_id in trials_wanted]
    if states_wanted is not None:
        again = [s for s in again if s.state in states_wanted]
    return again, said


def _by_options(out: Path, again: list[TrialState], args: argparse.Namespace,
                hints: dict) -> dict[LaunchOptions, tuple[str, list[TrialState]]]:
    """The trials to resubmit grouped by the options each is resubmitted with, and where those come from."""
    latest = latest_submission_of(out)
    groups: dict[LaunchOptions, tuple[str, list[TrialState]]] = {}
    for s in again:
        record = latest.get(s.index)
        recorded = LaunchOptions.of_record(record) if record is not None else None
        options = _resubmission_options(args, recorded, hints)
        if record is None:
            when = "never submitted: the grid's [launch]"
        elif recorded is None:
            when = "its submission recorded no options: the grid's [launch]"
        else:
            overrides = " ".join(f"{key}={value}" for key, value in recorded.overrides)
            when = f"as submitted at {record.get('submitted_at', '?')}" + (f", with --set {overrides}"
                                                                             if overrides else "")
        groups.setdefault(options, (when, []))[1].append(s)
    return groups


def _rehearsed(out: Path, indices: list[int], profile: Profile, options: LaunchOptions, trials: list[Trial],
               allow_long_local: bool) -> list[str]:
    """What ``resubmit --dry-run`` says of one group of trials: the plan it would launch, and the checks."""
    plan = plan_submission(out, indices, profile, options.trials_per_task, options.workers, options.pack_seeds)
    described = describe_plan(out, plan, trials)
    return [described.replace("dry run on profile", "would resubmit on profile", 1),
            *checks_rehearsed(out, [trials[i] for i in indices], plan, allow_long_local)]


def resubmit_command(args: argparse.Namespace) -> int:
    # deferred: h5py (status reads the trial files), kept out of the command line's start
    from pipeline.launch.monitor import gather

    check_workers(args)
    out = args.out
    manifest = read_manifest(out)  # a folder without a (readable) grid says so first
    states_wanted = _chosen_states(args.states)
    trials_wanted = _chosen_trials(args.trials, manifest)
    profile = last_profile(out, args.cluster)
    trials = trials_of_manifest(manifest)
    with raising_stop_signals():  # a polite kill ends the command with the guard released, as Ctrl-C does
        lease = None if args.dry_run else guard_folder(out)
        try:
            states = gather(out)
            refuse_unknown(states, args.force)
            again, said = _to_resubmit(states, args.force, trials_wanted, states_wanted)
            if not again:
                chosen = " of those chosen" if trials_wanted is not None or states_wanted is not None else ""
                print("\n".join(said + [f"nothing to resubmit{chosen}: every trial is complete, running or queued"
                                        if not chosen else f"nothing to resubmit{chosen}"]))
                return 0
            checks.check_devices([trials[s.index] for s in again], profile)
            groups = _by_options(out, again, args, manifest.get("launch", {}))
            said += [f"resubmitting {s.trial_id} ({s.state}: {s.detail})" for s in again]
            said.append(f"on profile {profile.name}")
            launches = []
            for options, (when, members) in groups.items():
                said.append(f"{len(members)} trial(s) with {options.words()} ({when})")
                indices = [s.index for s in members]
                if args.dry_run:
                    said += _rehearsed(out, indices, profile, options, trials, args.allow_long_local)
                else:
                    launches.append(launch(out, indices, args, profile, options))
            if args.dry_run:
                print("\n".join(said + ["dry run: nothing was resubmitted"]))
                return 0
        finally:
            if lease is not None:
                lease.release()
    print("\n".join(said + [launched for _, launched in launches]), flush=True)
    return follow(out, any(wait for wait, _ in launches), {s.index for s in again})
