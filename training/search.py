"""`curator train`'s default: a configuration chosen per dataset, on its validation split.

A fixed, documented search space over the choices that validation showed to matter
(docs/training.md, "Configuration search"), explored with Optuna's TPE sampler within a budget
of trials and time: no trial starts once the finished ones took the time, and one still
training then ends after that epoch, keeping its best epoch so far (the first two always run to
their end). The first trials are the preset the search starts from and `first_trials`'
variant of it (a resumed search runs those it has not run yet), so the search never chooses
something that validates worse than the preset. Each trial is a full `train()` run in
`RUN/trials/NN/` (a configuration proposed again is not retrained: it is recorded with
`repeat_of` and the earlier figures); a trial whose validation after `PRUNE_AFTER_EPOCHS`
epochs is below the median of earlier trials at that epoch is stopped (Optuna's median pruner).
The chosen trial's model, config and history become the run's own (`RUN/model/`,
`RUN/config.yaml`, ...), so `curator evaluate --model RUN` and `curator export --run RUN` use
it, and `RUN/search.json` records every trial: parameters, validation figures, epochs, seconds,
state.

Parameters that do not apply to a dataset are left out of its space: artist choices without
artists; without timestamps, the choice of leave-one-out examples (always on there).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import yaml

from training.atomic import check_run_directory, directory_lock, write_text_atomic
from training.config import TrainConfig
from training.data.dataset import Dataset
from training.distributed import Workers
from training.evaluation.splits import require_validation_tests, training_split
from training.run_files import read_json
from training.train import (
    DATASET_FILE,
    check_same_data,
    config_differences,
    data_fingerprint,
    train,
)

PRUNE_AFTER_EPOCHS = 4
RUN_FILES = ("config.yaml", "towers.json", "history.json", "summary.json")
RUN_DIRS = ("model", "best")


@dataclass(frozen=True)
class Choice:
    """One searched parameter: its candidate values and how a value changes a config."""

    name: str
    values: tuple
    apply: Callable[[TrainConfig, object], TrainConfig]
    applies_to: Callable[[Dataset], bool] = lambda dataset: True


def _set(field: str) -> Callable[[TrainConfig, object], TrainConfig]:
    return lambda config, value: replace(config, **{field: value})


def _policy(name: str) -> Callable[[TrainConfig, object], TrainConfig]:
    def apply(config: TrainConfig, count) -> TrainConfig:
        policies = {k: v for k, v in config.policy_counts.items() if k != name}
        if count:
            policies[name] = count
        return replace(config, policies=policies)

    return apply


def _artists(config: TrainConfig, on: bool) -> TrainConfig:
    weights = config.artist_prior_weights or (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
    return replace(config, artist_embedding=on, artist_prior_weights=weights if on else ())


def _has_artists(dataset: Dataset) -> bool:
    return bool((dataset.items["artist_id"] != "").any())


SEARCH_SPACE = (
    Choice("temperature", (0.05, 0.1, 0.2), _set("temperature")),
    Choice("learning_rate", (3e-4, 1e-3), _set("learning_rate")),
    Choice("hybrid", (False, True), _set("hybrid")),
    Choice("artist_embedding", (True, False), _artists, _has_artists),
    # untimed purchases always learn from leave_one_out (they have no next baskets)
    Choice("leave_one_out", (0, 1), _policy("leave_one_out"), lambda d: d.has_timestamps),
    Choice("same_artist", (6000, 0), _policy("same_artist"), _has_artists),
    Choice("uniform_negatives", (0, 512), _set("uniform_negatives")),
)


def space_for(dataset: Dataset) -> tuple[Choice, ...]:
    return tuple(choice for choice in SEARCH_SPACE if choice.applies_to(dataset))


def adapt_to_data(config: TrainConfig, dataset: Dataset) -> TrainConfig:
    """The preset, made trainable on this dataset: untimed purchases learn from leave-one-out
    examples instead of next baskets; no artists, no artist embedding or same-artist policy."""
    if not dataset.has_timestamps:
        config = _policy("history")(config, 0)
        config = _policy("leave_one_out")(config, config.policy_counts.get("leave_one_out") or 1)
    if not _has_artists(dataset):
        config = _policy("same_artist")(_policy("artist_cluster")(config, 0), 0)
        config = _artists(config, False)
    return config


def preset_values(config: TrainConfig, space: tuple[Choice, ...]) -> dict:
    """The search parameters that reproduce `config` (the first trial)."""
    current = {c.name: getattr(config, c.name, None) for c in space} | {
        "temperature": config.temperature,
        "learning_rate": config.learning_rate,
        "hybrid": config.hybrid,
        "artist_embedding": config.artist_embedding,
        "leave_one_out": config.policy_counts.get("leave_one_out", 0),
        "same_artist": config.policy_counts.get("same_artist", 0),
        "uniform_negatives": config.uniform_negatives,
    }
    values = {}
    for choice in space:
        value = current[choice.name]
        values[choice.name] = value if value in choice.values else choice.values[0]
    return values


def first_trials(base: TrainConfig, space: tuple[Choice, ...]) -> list[dict]:
    """The configurations tried before the sampler's own: the preset, then the preset with
    hybrid item ids at temperature 0.05, which suits data where the same items are bought by
    many customers (issue 11 reports it lifted R@20 from .066 to .093 on a public multimodal
    benchmark, not measured here, where the
    one-of-a-kind preset is weak); the validation decides between them."""
    preset = preset_values(base, space)
    names = {choice.name for choice in space}
    trials = [preset]
    if {"hybrid", "temperature"} <= names:
        repeat_buyers = {**preset, "hybrid": True, "temperature": 0.05}
        if repeat_buyers != preset:
            trials.append(repeat_buyers)
    return trials


def config_of(base: TrainConfig, space: tuple[Choice, ...], values: dict) -> TrainConfig:
    config = base
    for choice in space:
        config = choice.apply(config, values[choice.name])
    return config


def search(
    dataset: Dataset,
    base: TrainConfig,
    run_dir: Path | str,
    *,
    trials: int,
    budget_s: float = float("inf"),
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
    space: tuple[Choice, ...] | None = None,
    workers: Workers | None = None,
) -> dict:
    """Train `trials` configurations of the search space around `base` (see the module
    docstring), make the best on validation the run's model, and return search.json's content."""
    run_dir = Path(run_dir)
    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    check_run_directory(run_dir, resume=resume)
    require_validation_tests(dataset, training_split(dataset)[1])  # before anything is written
    busy = f"{run_dir} is being searched by another process: wait for it, or choose another --out"
    with directory_lock(run_dir, wait=False, busy=busy):
        return _search_locked(
            dataset, base, run_dir, trials, budget_s, resume, progress, space, workers
        )


def _search_locked(
    dataset, base, run_dir, trials, budget_s, resume, progress, space, workers
) -> dict:
    """`search`, with the run directory locked to this process."""
    check_run_directory(run_dir, resume=resume)  # another process may have filled it meanwhile
    run_dir.mkdir(parents=True, exist_ok=True)
    base = adapt_to_data(base, dataset)
    space = space_for(dataset) if space is None else space
    metric = base.selection_metric
    record_path = run_dir / "search.json"
    fingerprint = data_fingerprint(dataset)
    dataset = replace(dataset, fingerprint=fingerprint)  # so that its trials hash no more
    if resume:  # before the config: other data adapts the base config differently
        check_same_data(run_dir / DATASET_FILE, fingerprint)
    if not (run_dir / DATASET_FILE).exists():
        data_record = {"data_fingerprint": fingerprint, "dataset": dataset.location}
        _write_json(run_dir / DATASET_FILE, data_record)
    record = None
    if resume and record_path.exists():
        record = read_json(record_path, keys=("base", "space", "selection_metric", "trials"))
    if record is not None and record["base"] != base.to_dict():
        raise ValueError(f"--resume: the base config differs from {record_path}")
    record = record or {
        "base": base.to_dict(),
        "space": {c.name: list(c.values) for c in space},
        "selection_metric": metric,
        "trials": [],
    }

    distributions = {c.name: optuna.distributions.CategoricalDistribution(c.values) for c in space}
    # A resumed search runs first the trial it was interrupted in (from its checkpoint), then the
    # first trials it has not run yet, and its sampler is seeded past the proposals already
    # drawn: seeded as before, it would draw them again, one by one.
    running = record.pop("running", None)
    first = first_trials(base, space)
    drawn = max(0, len(record["trials"]) - len(first))
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # before the study: its INFO line
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=base.seed + drawn, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=PRUNE_AFTER_EPOCHS),
    )
    for done in record["trials"]:  # a resumed search: what is already known
        study.add_trial(_frozen_trial(done, distributions, metric))
    for values in first[len(record["trials"]) :]:
        study.enqueue_trial(values)
    if running is not None and running["number"] >= len(first):
        study.enqueue_trial(running["params"])

    while len(record["trials"]) < trials and not _over_budget(record, budget_s):
        trial = study.ask(distributions)
        number = len(record["trials"])
        trial_dir = run_dir / "trials" / f"{number:02d}"
        config = config_of(base, space, trial.params)
        resumable = resume and _has_checkpoint_of(trial_dir, config)
        curve = _earlier_curve(trial_dir, metric) if resumable else {}
        spent: list[float] = [0.0]  # the trial's seconds so far, its earlier sessions' too
        stopped_by_budget: list[int] = []

        def report(
            epoch: int,
            metrics: dict,
            seconds: float,
            trial=trial,
            curve=curve,
            spent=spent,
            stopped_by_budget=stopped_by_budget,
        ) -> bool:
            """Prune a trial below the median; end one (true) once the budget is spent, keeping
            its best epoch so far (the first two always run to their end). `seconds`: what the
            trial has trained so far, in every session (a resumed trial's earlier ones too)."""
            curve[epoch] = metrics[metric]
            spent[0] = seconds
            trial.report(metrics[metric], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
            if _trained(record) >= 2 and _seconds(record) + seconds >= budget_s:
                stopped_by_budget.append(epoch)
                return True
            return False

        earlier = next((t for t in record["trials"] if t["params"] == trial.params), None)
        if earlier is not None:  # the sampler proposed a configuration already trained
            value = earlier["validation"][metric] if earlier["state"] == "complete" else None
            study.tell(trial, value, _state(earlier["state"]))
            record["trials"].append({**earlier, "number": number, "repeat_of": earlier["number"]})
            record["trials"][-1]["seconds"] = 0.0
            _write_json(record_path, record)
            continue
        state, result = "complete", None
        if trial_dir.exists() and not resumable:
            shutil.rmtree(trial_dir)
        record["running"] = {"number": number, "params": dict(trial.params)}
        _write_json(record_path, record)
        try:
            result = train(
                dataset,
                config,
                trial_dir,
                resume=resumable,
                progress=False,
                on_epoch=report,
                workers=workers,
            )
        except optuna.TrialPruned:
            state = "pruned"
        value = result.best_metrics[metric] if result else max(curve.values())
        study.tell(trial, value if state == "complete" else None, _state(state))
        del record["running"]
        record["trials"].append(
            {
                "number": number,
                "state": state,
                "params": dict(trial.params),
                "validation": result.best_metrics if result else {metric: value},
                "best_epoch": result.best_epoch if result else int(max(curve, key=curve.get)),
                # a resumed trial's count and seconds include its earlier sessions
                "epochs": result.epochs_run if result else max(curve),
                "seconds": result.seconds if result else round(spent[0], 1),
                "intermediate": {str(k): v for k, v in curve.items()},
                "stopped_by_budget": bool(stopped_by_budget),
            }
        )
        _write_json(record_path, record)
        if progress:
            progress(_trial_line(record["trials"][-1], metric))
        if stopped_by_budget:
            break

    complete = [t for t in record["trials"] if t["state"] == "complete" and "repeat_of" not in t]
    chosen = max(complete, key=lambda t: t["validation"][metric])
    record["chosen"] = chosen["number"]
    record["chosen_config"] = config_of(base, space, chosen["params"]).to_dict()
    _adopt(run_dir / "trials" / f"{chosen['number']:02d}", run_dir)
    _write_json(record_path, record)
    summary = read_json(run_dir / "summary.json")
    summary["search"] = {
        "trials": len(record["trials"]),
        "chosen": chosen["number"],
        "seconds": round(_seconds(record), 1),
    }
    _write_json(run_dir / "summary.json", summary)
    return record


def _over_budget(record: dict, budget_s: float) -> bool:
    """The finished trials took `budget_s` seconds or more, and at least two were trained (the
    preset and one alternative are always tried)."""
    return _trained(record) >= 2 and _seconds(record) >= budget_s


def _trained(record: dict) -> int:
    """The finished trials that trained a model (not a configuration proposed again)."""
    return sum("repeat_of" not in t for t in record["trials"])


def _has_checkpoint_of(trial_dir: Path, config: TrainConfig) -> bool:
    """`trial_dir` holds an interrupted trial of `config` that `train(resume=True)` continues."""
    saved = trial_dir / "config.yaml"
    if not (trial_dir / "checkpoints").exists() or not saved.exists():
        return False
    try:
        return not config_differences(trial_dir, config)
    except (ValueError, yaml.YAMLError):  # not a config: the trial starts afresh
        return False


def _earlier_curve(trial_dir: Path, metric: str) -> dict[int, float]:
    """A resumed trial's validation `metric` per epoch of its earlier sessions (history.json;
    an epoch past the checkpoint is trained again and its value replaced)."""
    path = trial_dir / "history.json"
    if not path.exists():
        return {}
    try:
        return {int(r["epoch"]): float(r[f"valid_{metric}"]) for r in read_json(path)}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a training history ({error})") from None


def _seconds(record: dict) -> float:
    """What the finished trials took."""
    return sum(t["seconds"] for t in record["trials"])


def _state(state: str) -> optuna.trial.TrialState:
    return (
        optuna.trial.TrialState.COMPLETE if state == "complete" else optuna.trial.TrialState.PRUNED
    )


def _frozen_trial(done: dict, distributions: dict, metric: str) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        params=done["params"],
        distributions=distributions,
        value=done["validation"][metric] if done["state"] == "complete" else None,
        intermediate_values={int(k): v for k, v in done["intermediate"].items()},
        state=_state(done["state"]),
    )


def _adopt(trial_dir: Path, run_dir: Path) -> None:
    """The chosen trial's model, config and history become the run's (replacing earlier ones)."""
    for name in RUN_FILES:
        shutil.copyfile(trial_dir / name, run_dir / name)
    for name in RUN_DIRS:
        if (run_dir / name).exists():
            shutil.rmtree(run_dir / name)
        shutil.copytree(trial_dir / name, run_dir / name)


def _trial_line(trial: dict, metric: str) -> str:
    params = ", ".join(f"{k}={v}" for k, v in trial["params"].items())
    figure = trial["validation"].get(metric, np.nan)
    state = trial["state"] + (", stopped by the budget" if trial.get("stopped_by_budget") else "")
    return (
        f"trial {trial['number']}: {state}, validation {metric} {figure:.4f} after "
        f"{trial['epochs']} epochs, {trial['seconds']:.0f} s ({params})"
    )


def _write_json(path: Path, value: dict) -> None:
    write_text_atomic(path, json.dumps(value, indent=1) + "\n")
