"""Untimed training examples and the per-dataset configuration search."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace

import numpy as np
import pytest

import training.search as search_module
import training.train as train_module
from tests.conftest import tiny_config
from training.data.dataset import load_dataset
from training.evaluation.splits import training_split, untimed_validation_split, with_purchases
from training.sampling import SamplingContext, sample_examples
from training.search import Choice, _set, adapt_to_data, first_trials, search, space_for


def _untimed(dataset):
    purchases = dataset.purchases.assign(timestamp=np.nan)
    return with_purchases(dataset, purchases)


def test_untimed_examples_never_put_the_target_in_its_profile(small_marketplace):
    dataset = _untimed(load_dataset(small_marketplace))
    artists = np.zeros(dataset.n_items, np.int64)
    clusters = np.zeros(dataset.n_items, np.int64)
    context = SamplingContext.build(dataset.purchases, artists, clusters, max_profile=5)
    examples = sample_examples(context, {"leave_one_out": 1}, seed=0, negatives=False)
    owned = dataset.purchases.groupby("user_id")["item"].unique()
    n_expected = sum(items.size for items in owned if items.size >= 2)
    assert len(examples) == n_expected
    for profile, positive in zip(examples.profiles, examples.positives, strict=True):
        assert positive not in profile
        assert 1 <= profile.size <= 5


def test_untimed_examples_draw_profiles_afresh_each_epoch(small_marketplace):
    dataset = _untimed(load_dataset(small_marketplace))
    zeros = np.zeros(dataset.n_items, np.int64)
    context = SamplingContext.build(dataset.purchases, zeros, zeros, max_profile=2)
    first, second = (
        sample_examples(context, {"leave_one_out": 1}, seed=s, negatives=False) for s in (0, 1)
    )
    assert sorted(first.positives.tolist()) == sorted(second.positives.tolist())
    assert [p.tolist() for p in first.profiles] != [p.tolist() for p in second.profiles]


def test_untimed_validation_holds_out_one_artwork_per_customer(small_marketplace):
    purchases = _untimed(load_dataset(small_marketplace)).purchases
    fit, valid = untimed_validation_split(purchases, seed=0)
    sizes = purchases.groupby("user_id")["item"].nunique()
    assert set(valid["user_id"]) == set(sizes[sizes >= 3].index)
    assert valid["user_id"].is_unique
    held = set(zip(valid["user_id"], valid["item"], strict=True))
    assert not held & set(zip(fit["user_id"], fit["item"], strict=True))
    assert len(fit) + len(held) <= len(purchases)


def test_untimed_training_split_validates_on_holdout_cases(small_marketplace):
    fit, cases = training_split(_untimed(load_dataset(small_marketplace)))
    assert cases and all(case.is_last and np.isinf(case.time) for case in cases)
    fitted = fit.groupby("user_id")["item"].unique()
    for case in cases:
        assert not np.isin(case.ground_truth, fitted[case.user_id]).any()


def test_adapted_preset_trains_on_untimed_data_without_artists(small_marketplace):
    dataset = _untimed(load_dataset(small_marketplace))
    items = dataset.items.assign(artist_id="")
    dataset = replace(dataset, items=items)
    config = adapt_to_data(tiny_config(), dataset)
    assert config.policy_counts == {"leave_one_out": 1}
    assert not config.artist_embedding and not config.artist_prior_weights
    assert [choice.name for choice in space_for(dataset)] == [
        "temperature",
        "learning_rate",
        "hybrid",
        "uniform_negatives",
    ]


def test_search_picks_the_better_of_two_configurations(small_marketplace, tmp_path):
    """A learning rate of 1e-9 learns nothing: the search must choose the one that learns."""
    dataset = _untimed(load_dataset(small_marketplace))
    base = replace(tiny_config(), learning_rate=1e-9, epochs=3, selection_metric="auc")
    space = (Choice("learning_rate", (1e-9, 3e-3), _set("learning_rate")),)
    record = search(dataset, base, tmp_path / "run", trials=3, space=space)

    tried = {t["params"]["learning_rate"] for t in record["trials"]}
    assert tried == {1e-9, 3e-3}
    assert record["trials"][0]["params"] == {"learning_rate": 1e-9}  # the preset comes first
    chosen = record["trials"][record["chosen"]]
    assert chosen["params"] == {"learning_rate": 3e-3}
    best_bad = max(
        t["validation"]["auc"] for t in record["trials"] if t["params"]["learning_rate"] == 1e-9
    )
    assert chosen["validation"]["auc"] > best_bad
    saved = json.loads((tmp_path / "run" / "search.json").read_text())
    assert saved["chosen"] == record["chosen"] and len(saved["trials"]) == 3
    assert record["chosen_config"]["learning_rate"] == 3e-3
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["search"]["chosen"] == record["chosen"]
    assert (tmp_path / "run" / "model" / "towers.index").exists()


def test_a_configuration_proposed_again_is_not_retrained(small_marketplace, tmp_path):
    dataset = _untimed(load_dataset(small_marketplace))
    base = replace(tiny_config(), epochs=1)
    space = (Choice("learning_rate", (3e-3,), _set("learning_rate")),)
    record = search(dataset, base, tmp_path / "run", trials=3, space=space)
    assert [t.get("repeat_of") for t in record["trials"]] == [None, 0, 0]
    assert [t["seconds"] for t in record["trials"][1:]] == [0.0, 0.0]
    assert record["chosen"] == 0
    assert sorted(p.name for p in (tmp_path / "run" / "trials").iterdir()) == ["00"]


def test_a_search_hashes_its_data_once_for_all_its_trials(small_marketplace, tmp_path, monkeypatch):
    digests, sha256 = [], hashlib.sha256

    def counted_sha256():  # the digests data_fingerprint takes (the calibration takes others)
        digest = sha256()
        if sys._getframe(1).f_code.co_name == "data_fingerprint":
            digests.append(digest)
        return digest

    monkeypatch.setattr(train_module.hashlib, "sha256", counted_sha256)
    dataset = _untimed(load_dataset(small_marketplace))
    base = replace(tiny_config(), epochs=1)
    space = (Choice("learning_rate", (3e-3, 1e-3), _set("learning_rate")),)
    record = search(dataset, base, tmp_path / "run", trials=2, space=space)
    assert [t["state"] for t in record["trials"]] == ["complete", "complete"]
    assert len(digests) == 1
    recorded = {
        json.loads(path.read_text())["data_fingerprint"]
        for path in (tmp_path / "run").glob("**/dataset.json")
    }
    assert recorded == {digests[0].hexdigest()}


LEARNING_RATES = (3e-3, 2e-3, 1e-3, 7e-4, 5e-4, 3e-4, 2e-4, 1e-4)


def test_no_trial_starts_once_the_budget_is_spent_but_two_always_run(small_marketplace, tmp_path):
    dataset = _untimed(load_dataset(small_marketplace))
    base = replace(tiny_config(), epochs=3, patience=3)
    space = (Choice("learning_rate", LEARNING_RATES, _set("learning_rate")),)
    record = search(dataset, base, tmp_path / "run", trials=3, budget_s=0.0, space=space)
    assert [t["epochs"] for t in record["trials"]] == [3, 3]
    assert not any(t["stopped_by_budget"] for t in record["trials"])


def test_a_trial_running_when_the_budget_is_spent_ends_at_that_epoch(small_marketplace, tmp_path):
    dataset = _untimed(load_dataset(small_marketplace))
    base = replace(tiny_config(), epochs=3, patience=3)
    space = (Choice("learning_rate", LEARNING_RATES, _set("learning_rate")),)
    first = search(dataset, base, tmp_path / "run", trials=2, space=space)
    assert [t["epochs"] for t in first["trials"]] == [3, 3]
    # Resumed with a budget the two finished trials leave a millisecond of: the next trial
    # trained (proposals of a configuration already trained are recorded as repeats, 0 s)
    # spends it in its first epoch, ends there with that epoch as its model, and no other starts.
    left = sum(t["seconds"] for t in first["trials"]) + 0.001
    record = search(
        dataset, base, tmp_path / "run", trials=6, budget_s=left, resume=True, space=space
    )
    trained = [t for t in record["trials"][2:] if "repeat_of" not in t]
    assert len(trained) == 1 and record["trials"][-1] is trained[0]
    stopped = trained[0]
    assert stopped["state"] == "complete" and stopped["stopped_by_budget"]
    assert stopped["epochs"] == 1 and stopped["best_epoch"] == 1
    assert not any(t["stopped_by_budget"] for t in record["trials"][:2])
    trial_dir = tmp_path / "run" / "trials" / f"{stopped['number']:02d}"
    assert len(json.loads((trial_dir / "history.json").read_text())) == 1
    assert (trial_dir / "model" / "towers.index").exists()


def test_without_a_budget_every_trial_runs_all_its_epochs(small_marketplace, tmp_path):
    dataset = _untimed(load_dataset(small_marketplace))
    base = replace(tiny_config(), epochs=3, patience=3)
    space = (Choice("learning_rate", LEARNING_RATES, _set("learning_rate")),)
    record = search(dataset, base, tmp_path / "run", trials=4, space=space)
    trained = [t for t in record["trials"] if "repeat_of" not in t]
    assert len(trained) >= 3
    assert all(t["epochs"] == 3 and not t["stopped_by_budget"] for t in trained)


def test_a_search_resumed_after_the_preset_runs_the_second_first_trial(small_marketplace, tmp_path):
    dataset = load_dataset(small_marketplace)
    base = replace(tiny_config(), epochs=1, hybrid=False, temperature=0.2)
    space = (
        Choice("temperature", (0.05, 0.1, 0.2), _set("temperature")),
        Choice("hybrid", (False, True), _set("hybrid")),
    )
    search(dataset, base, tmp_path / "run", trials=1, space=space)
    record = search(dataset, base, tmp_path / "run", trials=2, resume=True, space=space)
    assert [t["params"] for t in record["trials"]] == [
        {"temperature": 0.2, "hybrid": False},
        {"temperature": 0.05, "hybrid": True},
    ]


class _Interrupted(Exception):
    pass


def _interrupt_the_first_drawn_trial(monkeypatch):
    """Make the search's `train` raise _Interrupted after epoch 1 of the first drawn trial
    (trials 0 and 1 are the preset and its variant); returns the real `train`."""
    real_train = search_module.train

    def interrupted_in_a_drawn_trial(dataset, config, trial_dir, *, on_epoch, **options):
        def stop_after_epoch_1(epoch, metrics, seconds):
            on_epoch(epoch, metrics, seconds)
            raise _Interrupted

        callback = stop_after_epoch_1 if int(trial_dir.name) >= 2 else on_epoch
        return real_train(dataset, config, trial_dir, on_epoch=callback, **options)

    monkeypatch.setattr(search_module, "train", interrupted_in_a_drawn_trial)
    return real_train


def _search_interrupted_in_a_drawn_trial(small_marketplace, run, monkeypatch):
    """A search on the small marketplace (untimed, 3 epochs a trial, learning rates) at `run`,
    interrupted after epoch 1 of its first drawn trial: (dataset, base, space, the real
    `train`)."""
    dataset = _untimed(load_dataset(small_marketplace))
    base = replace(tiny_config(), epochs=3, patience=3)
    space = (Choice("learning_rate", LEARNING_RATES, _set("learning_rate")),)
    real_train = _interrupt_the_first_drawn_trial(monkeypatch)
    with pytest.raises(_Interrupted):
        search(dataset, base, run, trials=6, space=space)
    return dataset, base, space, real_train


def test_a_search_interrupted_in_a_drawn_trial_resumes_that_trial(
    small_marketplace, tmp_path, monkeypatch
):
    dataset, base, space, real_train = _search_interrupted_in_a_drawn_trial(
        small_marketplace, tmp_path / "run", monkeypatch
    )
    running = json.loads((tmp_path / "run" / "search.json").read_text())["running"]
    number = running["number"]
    assert number >= 2

    monkeypatch.setattr(search_module, "train", real_train)
    record = search(dataset, base, tmp_path / "run", trials=number + 1, resume=True, space=space)
    assert "running" not in record
    assert record["trials"][number]["params"] == running["params"]
    assert "repeat_of" not in record["trials"][number]
    assert record["trials"][number]["epochs"] == 3
    trial_dir = tmp_path / "run" / "trials" / f"{number:02d}"
    history = json.loads((trial_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]  # epoch 1 from before, then 2 and 3
    curve = {int(e): v for e, v in record["trials"][number]["intermediate"].items()}
    assert curve == {h["epoch"]: h[f"valid_{record['selection_metric']}"] for h in history}


def test_the_first_trials_are_the_preset_then_hybrid_ids_at_temperature_0_05():
    base = replace(tiny_config(), hybrid=False, temperature=0.2)
    space = (
        Choice("temperature", (0.05, 0.1, 0.2), _set("temperature")),
        Choice("hybrid", (False, True), _set("hybrid")),
    )
    assert first_trials(base, space) == [
        {"temperature": 0.2, "hybrid": False},
        {"temperature": 0.05, "hybrid": True},
    ]
    already = replace(base, hybrid=True, temperature=0.05)
    assert first_trials(already, space) == [{"temperature": 0.05, "hybrid": True}]


def test_a_resumed_trial_counts_its_earlier_sessions_against_the_budget(
    small_marketplace, tmp_path, monkeypatch
):
    dataset, base, space, real_train = _search_interrupted_in_a_drawn_trial(
        small_marketplace, tmp_path / "run", monkeypatch
    )
    record = json.loads((tmp_path / "run" / "search.json").read_text())
    number = record["running"]["number"]
    # As if the trial's first session had taken 1,000 s (its history, which a resumed run's
    # clock starts from): with 500 s left after the finished trials, the resumed trial ends
    # after its next epoch instead of running its last two.
    history_path = tmp_path / "run" / "trials" / f"{number:02d}" / "history.json"
    history = json.loads(history_path.read_text())
    assert [h["epoch"] for h in history] == [1]
    history[0]["elapsed_s"] = 1000.0
    history_path.write_text(json.dumps(history))
    finished_s = sum(t["seconds"] for t in record["trials"])  # repeats count 0 s
    monkeypatch.setattr(search_module, "train", real_train)
    resumed = search(
        dataset,
        base,
        tmp_path / "run",
        trials=number + 1,
        budget_s=finished_s + 500,
        resume=True,
        space=space,
    )
    trial = resumed["trials"][number]
    assert trial["stopped_by_budget"] and trial["epochs"] == 2 and trial["seconds"] > 1000
    assert list(trial["intermediate"]) == ["1", "2"]  # the first session's epoch too
