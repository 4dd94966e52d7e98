"""The replay protocol on a hand-traced store, the holdout protocol, and the paper's checks on
the real UGallery transactions."""

import numpy as np
import pytest

from tests.conftest import TINY_ITEMS, write_dataset
from training.data.dataset import load_dataset
from training.evaluation.evaluate import evaluate
from training.evaluation.protocols import holdout_cases, replay_cases

# Traced by hand on tests/conftest.py's tiny store (rows: a0 b1 c2 d3 e4; b is not one of a kind):
#   u3 buys c (Jan 5), u1 buys a (Jan 10), u2 buys b (Jan 20): first purchases, no test.
#   u1 on Feb 10 (b, d): inventory {b, d} (a and c sold); truth: this + later sessions in it.
#   u2 on Mar 1 buys c, already sold: nothing of u2's future is in the inventory: no test.
#   u1 on Apr 1 (e): inventory {b, e} (d sold; e uploaded Mar 15): truth {e}, the last session.


def test_replay_cases_by_hand(tiny_dataset_dir):
    first, second = replay_cases(load_dataset(tiny_dataset_dir))
    assert (first.user_id, first.is_last) == ("u1", False)
    assert first.profile.tolist() == [0]
    assert first.inventory.tolist() == [1, 3]
    assert first.ground_truth.tolist() == [1, 3]
    assert (second.user_id, second.is_last) == ("u1", True)
    assert second.profile.tolist() == [0, 1, 3]
    assert second.inventory.tolist() == [1, 4]
    assert second.ground_truth.tolist() == [4]


def test_sold_original_leaves_inventory_but_print_stays(tiny_dataset_dir):
    _, second = replay_cases(load_dataset(tiny_dataset_dir))
    assert 3 not in second.inventory  # d (original) sold on Feb 10
    assert 1 in second.inventory  # b (not one of a kind) bought twice, still for sale


def test_upload_at_the_same_time_as_a_session_is_in_its_inventory(tmp_path):
    items = TINY_ITEMS.replace("e,z,2020-03-15", "e,z,2020-04-01")
    purchases = "user_id,item_id,timestamp\nu1,a,2020-01-10\nu1,e,2020-04-01\n"
    (case,) = replay_cases(load_dataset(write_dataset(tmp_path / "d", items, purchases)))
    assert 4 in case.inventory and case.ground_truth.tolist() == [4]


def test_replay_marks_artwork_sold_in_earlier_session_warm(tiny_dataset_dir):
    first, second = replay_cases(load_dataset(tiny_dataset_dir))
    # Feb 10, truth {b, d}: u2 bought b on Jan 20; d is bought in this very session: cold
    assert first.ground_truth_sold.tolist() == [True, False]
    assert second.ground_truth_sold.tolist() == [False]  # e: never sold before Apr 1
    assert first.truth_of_kind("cold").tolist() == [False, True]


def test_replay_session_at_the_same_time_counts_only_if_consumed_first(tmp_path):
    # u1 and u2 both buy the print b on Feb 10; sessions at one time go in customer-id order
    purchases = (
        "user_id,item_id,timestamp\nu1,a,2020-01-10\nu2,c,2020-01-05\n"
        "u1,b,2020-02-10\nu2,b,2020-02-10\n"
    )
    first, second = replay_cases(load_dataset(write_dataset(tmp_path / "d", TINY_ITEMS, purchases)))
    assert (first.user_id, first.ground_truth.tolist()) == ("u1", [1])
    assert first.ground_truth_sold.tolist() == [False]  # u2's session is not consumed yet
    assert (second.user_id, second.ground_truth.tolist()) == ("u2", [1])
    assert second.ground_truth_sold.tolist() == [True]  # u1's session came first


def test_replay_needs_timestamps(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path / "d", TINY_ITEMS, "user_id,item_id\nu1,a\n"))
    with pytest.raises(ValueError, match="needs purchase timestamps"):
        replay_cases(dataset)


def test_holdout_ranks_everything_for_sale_but_training_purchases(tmp_path):
    root = write_dataset(
        tmp_path / "d",
        TINY_ITEMS,
        "user_id,item_id\nu1,a\nu1,b\nu2,b\n",
        test="user_id,item_id\nu1,e\nu1,a\nu9,b\n",
    )
    (case,) = holdout_cases(load_dataset(root))  # u9 has no training purchases: no test
    assert case.user_id == "u1" and case.profile.tolist() == [0, 1]
    assert case.ground_truth.tolist() == [4]  # a was bought in training: not a target
    assert case.candidates(5).tolist() == [2, 3, 4]


def test_holdout_takes_sold_one_of_a_kind_artworks_out_of_the_candidates(tmp_path):
    # TINY_ITEMS: a, c, d, e are one of a kind, b is not
    root = write_dataset(
        tmp_path / "d",
        TINY_ITEMS,
        "user_id,item_id\nu1,a\nu2,b\nu2,c\n",
        valid="user_id,item_id\nu2,d\n",
        test="user_id,item_id\nu1,b\nu1,c\nu1,e\nu2,e\n",
    )
    dataset = load_dataset(root)
    first, second = holdout_cases(dataset)
    # c was sold to u2 in training and d in validation: neither is for sale any more;
    # b, a print u2 bought, still is
    assert first.candidates(5).tolist() == [1, 4]
    assert first.ground_truth.tolist() == [1, 4]  # c, sold to another, is no target
    assert second.candidates(5).tolist() == [4]  # a sold to u1, b and c its own, d in valid
    assert first.unavailable is second.unavailable  # one array for the split, not one per test
    (validation,) = [case for case in holdout_cases(dataset, "valid") if case.user_id == "u2"]
    # the validation's tests know only the training purchases: d is their target, e for sale
    assert validation.candidates(5).tolist() == [3, 4]


def test_holdout_warm_means_in_training_purchases(tmp_path):
    root = write_dataset(
        tmp_path / "d",
        TINY_ITEMS,
        "user_id,item_id\nu1,a\nu2,b\n",
        test="user_id,item_id\nu1,b\nu1,e\nu2,d\nu2,e\n",
    )
    first, second = holdout_cases(load_dataset(root))
    assert first.ground_truth.tolist() == [1, 4]
    assert first.ground_truth_sold.tolist() == [True, False]  # u2 bought b in training
    assert second.ground_truth_sold.tolist() == [False, False]  # test purchases do not count


def test_cold_subsets_need_recorded_sales():
    from training.evaluation.protocols import Case

    case = Case(7, "u", 0.0, np.array([0]), np.array([1]), True, np.array([1, 2]))
    with pytest.raises(ValueError, match="test 7 \\(user u\\) has no ground_truth_sold"):
        case.truth_of_kind("cold")


def test_holdout_without_split_file_is_a_clear_error(tiny_dataset_dir):
    with pytest.raises(ValueError, match="needs valid.csv"):
        holdout_cases(load_dataset(tiny_dataset_dir), "valid")


# --- the paper's protocol checked on the real transactions ---------------------------------


@pytest.fixture(scope="module")
def ugallery_cases(ugallery_dataset):
    return replay_cases(ugallery_dataset)


def test_ugallery_replay_has_the_papers_test_counts(ugallery_cases):
    assert len(ugallery_cases) == 1_978
    assert sum(case.is_last for case in ugallery_cases) == 728


def test_ugallery_mean_inventory_at_last_sessions(ugallery_cases):
    sizes = [case.inventory.size for case in ugallery_cases if case.is_last]
    assert np.mean(sizes) == pytest.approx(2_135, abs=1)


def test_ugallery_oracle_and_random_match_the_paper(ugallery_dataset):
    result = evaluate(ugallery_dataset, baselines=["oracle", "random"])
    oracle, random = result.row("oracle", "last"), result.row("random", "last")
    assert oracle["n_tests"] == 728
    assert oracle["p@20"] == pytest.approx(0.0655, abs=5e-5)
    assert oracle["p@100"] == pytest.approx(0.0131, abs=5e-5)
    assert oracle["auc"] == 1.0 and oracle["r@100"] == 1.0
    assert random["auc"] == pytest.approx(0.50, abs=0.02)
    assert result.row("oracle", "all")["n_tests"] == 1_978


def test_ugallery_cold_and_warm_rows_split_the_tests(ugallery_dataset):
    result = evaluate(ugallery_dataset, baselines=["oracle"])
    assert [row["subset"] for row in result.rows] == [
        "last",
        "last:cold",
        "last:warm",
        "all",
        "all:cold",
        "all:warm",
    ]
    for subset in ("last", "all"):
        whole = result.row("oracle", subset)["n_tests"]
        cold = result.row("oracle", f"{subset}:cold")["n_tests"]
        warm = result.row("oracle", f"{subset}:warm")["n_tests"]
        assert max(cold, warm) <= whole <= cold + warm  # a test may hold both kinds
        assert result.row("oracle", f"{subset}:cold")["auc"] == 1.0  # still a perfect ranking
