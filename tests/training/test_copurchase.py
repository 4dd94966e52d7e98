"""The co-purchase term: fitted as item-kNN by hand, saved and loaded safely, remapped."""

import io

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from training import copurchase
from training.copurchase import FILE_NAME, CoPurchase, ease_neighbours, profile_scores

# customers 0-2 bought rows 0/1/2 of a 5-artwork catalogue in these combinations; row 3 once
PURCHASES = pd.DataFrame(
    {"user_id": ["a", "a", "b", "b", "b", "c", "c"], "item": [0, 1, 0, 1, 2, 1, 3]}
)
IDS = np.array(["x0", "x1", "x2", "x3", "x4"])


def hand_cosine() -> np.ndarray:
    """[5, 5] cosine of the buyer sets, diagonal 0 (computed by hand from PURCHASES)."""
    buyers = {0: {"a", "b"}, 1: {"a", "b", "c"}, 2: {"b"}, 3: {"c"}, 4: set()}
    similarity = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            if i != j and buyers[i] and buyers[j]:
                shared = len(buyers[i] & buyers[j])
                similarity[i, j] = shared / np.sqrt(len(buyers[i]) * len(buyers[j]))
    return similarity


def test_fit_is_item_knn_over_the_buyers_and_scores_are_normalised_sums():
    term = CoPurchase.fit(PURCHASES, IDS, neighbours=None)
    assert list(term.item_ids) == ["x0", "x1", "x2", "x3"]  # x4 never sold: no row
    on_catalogue = term.on_catalogue(IDS).toarray()
    np.testing.assert_allclose(on_catalogue, hand_cosine(), rtol=1e-6)
    profiles = [np.array([0]), np.array([2, 3]), np.array([4])]
    scores = profile_scores(term.on_catalogue(IDS), profiles).toarray()
    for profile, row in zip(profiles, scores, strict=True):
        summed = hand_cosine()[profile].sum(axis=0)
        expected = summed / summed.max() if summed.max() > 0 else summed
        np.testing.assert_allclose(row, expected, rtol=1e-6)
    assert scores[0].max() == pytest.approx(1.0) and not scores[2].any()


def test_neighbours_keep_each_rows_largest():
    term = CoPurchase.fit(PURCHASES, IDS, neighbours=1)
    dense = term.on_catalogue(IDS).toarray()
    assert (np.count_nonzero(dense, axis=1) <= 1).all()
    np.testing.assert_allclose(dense.max(axis=1), hand_cosine().max(axis=1), rtol=1e-6)


def test_another_catalogue_order_and_missing_artworks():
    term = CoPurchase.fit(PURCHASES, IDS, neighbours=None)
    other = np.array(["x3", "new", "x1", "x0"])  # x2 gone, rows reordered, one unknown
    mapped = term.on_catalogue(other).toarray()
    full = hand_cosine()
    where = {"x3": 3, "x1": 1, "x0": 0}
    for i, a in enumerate(other):
        for j, b in enumerate(other):
            expected = full[where[a], where[b]] if a in where and b in where else 0.0
            assert mapped[i, j] == pytest.approx(expected, rel=1e-6)
    assert term.on_catalogue(np.array([], str)).shape == (0, 0)


def test_round_trip_and_bad_files_are_refused(tmp_path):
    term = CoPurchase.fit(PURCHASES, IDS, neighbours=None)
    path = term.save(tmp_path)
    assert path.name == FILE_NAME
    loaded = CoPurchase.load(path)
    np.testing.assert_array_equal(loaded.item_ids, term.item_ids)
    assert (loaded.weights != term.weights).nnz == 0

    def write(**arrays):
        saved = dict(
            item_ids=term.item_ids,
            indptr=term.weights.indptr.astype(np.int64),
            indices=term.weights.indices.astype(np.int64),
            data=term.weights.data,
        )
        saved.update(arrays)
        buffer = io.BytesIO()
        np.savez(buffer, **saved)
        bad = tmp_path / "bad.npz"
        bad.write_bytes(buffer.getvalue())
        return bad

    data = term.weights.data.copy()
    cases = {
        "nan": lambda: write(data=np.where(np.arange(data.size) == 0, np.nan, data)),
        "beyond float32": lambda: write(
            data=np.where(np.arange(data.size) == 0, 1e39, data.astype(np.float64))
        ),
        "negative": lambda: write(data=-data),
        "index out of range": lambda: write(indices=term.weights.indices + 10),
        "short indptr": lambda: write(indptr=term.weights.indptr[:-1]),
        "duplicate ids": lambda: write(item_ids=np.array(["x0", "x0", "x2", "x3"])),
        "object ids": lambda: write(item_ids=np.array(["x0", 1, "x2", "x3"], dtype=object)),
    }
    # each bad file is written just before it is loaded (they share one path)
    for make in cases.values():
        with pytest.raises(ValueError, match="bad.npz"):
            CoPurchase.load(make())
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a co-purchase file"):
        CoPurchase.load(tmp_path / "junk.npz")


def test_profile_scores_of_profiles_with_nothing_co_purchased_are_zero():
    weights = sp.csr_matrix((3, 3), dtype=np.float32)
    scores = profile_scores(weights, [np.array([0, 1]), np.array([], np.int64)])
    assert scores.shape == (2, 3) and scores.nnz == 0


def hand_ease(l2: float) -> np.ndarray:
    """[4, 4] EASE^R over the four artworks that sold (x0-x3), by the closed form in numpy."""
    bought = np.zeros((3, 4))
    for user, item in zip(PURCHASES["user_id"], PURCHASES["item"], strict=True):
        bought["abc".index(user), item] = 1
    inverse = np.linalg.inv(bought.T @ bought + l2 * np.eye(4))
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def test_the_ease_kind_is_eases_closed_form_keeping_each_rows_strongest_by_magnitude():
    term = CoPurchase.fit_ease(PURCHASES, IDS, l2=0.5, neighbours=10)
    assert term.kind == "ease" and term.file_name == "ease.npz"
    assert list(term.item_ids) == ["x0", "x1", "x2", "x3"]
    expected = hand_ease(0.5)
    assert (expected < 0).any()  # the kind's point: what is bought instead of what
    np.testing.assert_allclose(term.weights.toarray(), expected, rtol=1e-5, atol=1e-7)
    strongest = CoPurchase.fit_ease(PURCHASES, IDS, l2=0.5, neighbours=2).weights.toarray()
    for row, full in zip(strongest, expected, strict=True):
        kept = np.sort(np.argsort(-np.abs(full))[:2])  # by magnitude, not by value
        np.testing.assert_array_equal(np.flatnonzero(row), kept)
        np.testing.assert_allclose(row[kept], full[kept], rtol=1e-5)
    # x0's second strongest is x3's -0.39, where by value it would be x2's 0.27
    assert strongest[0, 3] < 0 and strongest[0, 2] == 0


def test_profile_scores_divide_by_the_largest_magnitude_with_negative_weights():
    weights = sp.csr_matrix(np.array([[0.0, -4.0, 1.0], [2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]))
    profiles = [np.array([0]), np.array([0, 1]), np.array([2])]
    scores = profile_scores(weights, profiles).toarray()
    dense = weights.toarray()
    for profile, row in zip(profiles, scores, strict=True):
        summed = dense[profile].sum(axis=0)
        np.testing.assert_allclose(row, summed / np.abs(summed).max(), rtol=1e-6)
    assert scores[0].min() == pytest.approx(-1.0)  # a negative sum sets the scale


def test_an_ease_file_round_trips_and_the_kinds_are_told_apart(tmp_path):
    from training.copurchase import load_if_present

    ease = CoPurchase.fit_ease(PURCHASES, IDS, l2=0.5)
    path = ease.save(tmp_path)
    loaded = CoPurchase.load(path)
    assert loaded.kind == "ease" and (loaded.weights != ease.weights).nnz == 0
    assert load_if_present(tmp_path, "ease").kind == "ease"
    assert load_if_present(tmp_path) is None  # no item-kNN file there
    # an EASE matrix under the item-kNN name is refused, as are negative weights called cosines
    (tmp_path / FILE_NAME).write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="holds the ease kind, expected item-knn"):
        load_if_present(tmp_path)
    with np.load(path) as saved:
        arrays = dict(saved)
    for kind, message in (("item-knn", "negative"), ("bogus", "not one of"), (3, "not one of")):
        np.savez(tmp_path / "other.npz", **{**arrays, "kind": np.array(kind)})
        with pytest.raises(ValueError, match=message):
            CoPurchase.load(tmp_path / "other.npz")
    # a file written before the kinds: item-kNN
    del arrays["kind"]
    np.savez(tmp_path / "old.npz", **{**arrays, "data": np.abs(arrays["data"])})
    assert CoPurchase.load(tmp_path / "old.npz").kind == "item-knn"


def test_ease_rows_share_a_weight_budget_with_a_floor(monkeypatch):
    monkeypatch.setattr(copurchase, "EASE_NEIGHBOURS", 3)
    monkeypatch.setattr(copurchase, "EASE_WEIGHT_BUDGET", 120)
    assert [ease_neighbours(n) for n in (0, 1, 10, 24, 40, 41, 1000)] == [120, 120, 12, 5, 3, 3, 3]
    rng = np.random.default_rng(7)
    for n, per_row in ((10, 12), (24, 5), (50, 3)):  # 12 > 9 off-diagonal: kept whole at 10
        dense = rng.normal(size=(n, n)).astype(np.float32)
        np.fill_diagonal(dense, 0.0)
        term = CoPurchase.of_ease(np.arange(n).astype(str), sp.csr_matrix(dense))
        kept = term.weights.toarray()
        for row, full in zip(kept, dense, strict=True):
            strongest = np.argsort(-np.abs(full), kind="stable")[: min(per_row, n - 1)]
            np.testing.assert_array_equal(np.flatnonzero(row), np.sort(strongest))
            np.testing.assert_array_equal(row[strongest], full[strongest])
        assert term.weights.nnz <= max(120, 3 * n)
