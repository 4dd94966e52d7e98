"""Importers: UGallery's real transactions and the public release format."""

import numpy as np
import pandas as pd
import pytest

from tests.conftest import UGALLERY
from training.data.columns import DatasetError
from training.data.dataset import load_dataset, save_dataset
from training.data.importers import import_ugallery, import_ugallery_release


def test_ugallery_import_keeps_real_transactions(ugallery_dataset):
    dataset = ugallery_dataset
    assert dataset.n_items == 7_742 and len(dataset.purchases) == 6_535
    assert dataset.purchases["user_id"].nunique() == 2_919
    assert int(dataset.items["one_of_a_kind"].sum()) == 6_040
    assert dataset.features.shape == (7_742, 2048) and dataset.features.dtype == np.float32
    assert (dataset.features >= 0).all()


def test_ugallery_stand_in_features_follow_artist(ugallery_dataset):
    """Stand-ins carry the real artist: same-artist artworks are closer than random pairs."""
    features = ugallery_dataset.features
    centred = features - features.mean(axis=0)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    artists = ugallery_dataset.items["artist_id"].to_numpy()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(artists), (2, 20_000))
    same = (artists[a] == artists[b]) & (a != b)
    similarity = np.sum(unit[a] * unit[b], axis=1)
    assert similarity[same].mean() > similarity[~same].mean() + 0.3


def test_ugallery_import_writes_labelled_dataset(tmp_path):
    if not (UGALLERY / "valid_sales.csv").exists():
        pytest.skip("real UGallery data not present")
    dataset, readme = import_ugallery(UGALLERY / "valid_sales.csv", UGALLERY / "valid_artworks.csv")
    save_dataset(dataset, tmp_path / "ug", readme=readme)
    text = (tmp_path / "ug" / "README.md").read_text()
    assert "STAND-IN" in text and "NOT comparable" in text
    assert load_dataset(tmp_path / "ug", mmap=True).n_items == 7_742


def test_ugallery_unknown_artwork_in_sales_is_an_error(tmp_path):
    (tmp_path / "art.csv").write_text(
        "id,artist_id,upload_date,original,medium_id\n1,7,2015-01-01 10:00:00.5,t,0\n"
    )
    (tmp_path / "sales.csv").write_text(
        "id,customer_id,artwork_id,order_date\n1,5,1,2015-02-01\n2,5,99,2015-03-01\n"
    )
    with pytest.raises(
        DatasetError, match=r"^sales.csv, line 3, field 'artwork_id': unknown item '99'"
    ):
        import_ugallery(tmp_path / "sales.csv", tmp_path / "art.csv")


def _write_release(root, vectors=None):
    root.mkdir()
    pd.DataFrame(
        {
            "artwork_id_hash": ["h1", "h2", "h3"],
            "artist_id_hash": ["A", "A", "B"],
            "upload_timestamp": [1_400_000_000, 1_400_000_100, 1_400_000_200],
        }
    ).to_csv(root / "ugallery_inventory.csv", index=False)
    pd.DataFrame(
        {
            "user_id_hash": ["u1", "u2", "u1"],
            "purchase_timestamp": [1_400_100_000, 1_400_200_000, 1_400_300_000],
            "artwork_id_hash": ["h1", "h1", "h3"],
        }
    ).to_csv(root / "ugallery_purchases.csv", index=False)
    rng = np.random.default_rng(0)
    if vectors is None:
        vectors = [rng.random(2048) for _ in range(4)]
    rows = np.empty(4, dtype=object)
    for i, (item, vector) in enumerate(zip(["h3", "h1", "extra", "h2"], vectors, strict=True)):
        rows[i] = (item, vector)
    np.save(root / "ugallery_resnet50_embeddings.npy", rows, allow_pickle=True)
    return root, vectors


def _release_args(root):
    return (
        root / "ugallery_inventory.csv",
        root / "ugallery_purchases.csv",
        root / "ugallery_resnet50_embeddings.npy",
    )


def test_release_import_refuses_to_unpickle_by_default(tmp_path):
    root, _ = _write_release(tmp_path / "rel")
    with pytest.raises(DatasetError, match="can only be read by unpickling.*--trust-pickle"):
        import_ugallery_release(*_release_args(root))


def test_release_import_aligns_embeddings_and_infers_one_of_a_kind(tmp_path):
    root, vectors = _write_release(tmp_path / "rel")
    dataset, readme = import_ugallery_release(*_release_args(root), trust_pickle=True)
    assert list(dataset.items["item_id"]) == ["h1", "h2", "h3"]
    np.testing.assert_allclose(dataset.features[0], vectors[1], rtol=1e-6)  # h1
    np.testing.assert_allclose(dataset.features[2], vectors[0], rtol=1e-6)  # h3
    # h1 was bought in two baskets, so it cannot be one of a kind
    assert list(dataset.items["one_of_a_kind"]) == [False, True, True]
    assert "1 embeddings of\nartworks missing from the inventory were ignored" in readme
    save_dataset(dataset, tmp_path / "out", readme=readme)
    assert load_dataset(tmp_path / "out").purchases["item"].tolist() == [0, 0, 2]


def test_release_import_rejects_bad_vectors(tmp_path):
    vectors = [np.ones(2048)] * 3 + [np.full(2048, np.nan)]
    root, _ = _write_release(tmp_path / "rel", vectors)
    with pytest.raises(DatasetError, match=r"ugallery_resnet50_embeddings.npy: row 3: .*NaN"):
        import_ugallery_release(*_release_args(root), trust_pickle=True)


def test_release_import_rejects_inventory_without_embedding(tmp_path):
    root, _ = _write_release(tmp_path / "rel")
    inventory = root / "ugallery_inventory.csv"
    inventory.write_text(inventory.read_text() + "h9,B,1400000300\n")
    with pytest.raises(DatasetError, match="line 5, field 'artwork_id_hash': artwork 'h9' has no"):
        import_ugallery_release(*_release_args(root), trust_pickle=True)


def _object_rows(*rows) -> np.ndarray:
    array = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        array[i] = row
    return array


def _save_pickle(rows):
    return lambda path: np.save(path, rows, allow_pickle=True)


def _truncated(path):
    _save_pickle(_object_rows(("h1", np.ones(8)), ("h2", np.ones(8))))(path)
    path.write_bytes(path.read_bytes()[:-40])


def _npz_under_npy_name(path):
    with path.open("wb") as file:
        np.savez(file, rows=np.ones(3))


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (  # once TypeError: object of type 'numpy.float32' has no len()
            lambda path: np.save(path, np.ones(5, np.float32)),
            "holds an array of dtype float32 and shape (5,), expected a non-empty object array "
            "of (id, vector) rows",
        ),
        (  # once AttributeError: 'NpzFile' object has no attribute 'ndim'
            _npz_under_npy_name,
            "is a zip archive (an .npz?), not a .npy array",
        ),
        (
            lambda path: path.write_text("h1 0.5 0.5\n"),
            "not a .npy file (it does not start with numpy's magic)",
        ),
        (  # once UnpicklingError: pickle data was truncated
            _truncated,
            "cannot read as .npy (UnpicklingError: pickle data was truncated)",
        ),
        (  # once TypeError: object of type 'int' has no len()
            _save_pickle(_object_rows(("h1", np.ones(4)), 5)),
            "row 1: expected an (id, vector) pair, got int '5'",
        ),
        (  # once "could not convert string to float: 'hello'", naming no file or row
            _save_pickle(_object_rows(("h1", np.ones(4)), ("h2", "hello"))),
            "row 1: the vector is str 'hello', expected an array of numbers",
        ),
        (
            _save_pickle(_object_rows(("h1", None))),
            "row 0: the vector is NoneType 'None', expected an array of numbers",
        ),
        (
            _save_pickle(_object_rows(("h1", np.ones(4)), ("h2", np.ones(3)))),
            "row 1: vector shape (3,), expected (4,) as in row 0",
        ),
        (
            _save_pickle(_object_rows(("h1", np.ones((2, 2))))),
            "row 0: vector shape (2, 2), expected a flat non-empty vector",
        ),
        (  # once cast to inf with numpy's RuntimeWarning, then refused as features.npy's inf
            _save_pickle(_object_rows(("h1", np.ones(4)), ("h2", np.array([1, 1e300, 1, 1])))),
            "row 1: vector value 1e+300 is beyond float32's range (magnitudes up to 3.40282e+38)",
        ),
    ],
)
def test_release_import_refuses_malformed_embeddings_naming_file_and_row(tmp_path, write, message):
    root, _ = _write_release(tmp_path / "rel")
    write(root / "ugallery_resnet50_embeddings.npy")
    with pytest.raises(DatasetError) as caught:
        import_ugallery_release(*_release_args(root), trust_pickle=True)
    assert str(caught.value) == f"ugallery_resnet50_embeddings.npy: {message}"


def test_release_embeddings_may_be_an_object_array_of_id_vector_columns(tmp_path):
    root, vectors = _write_release(tmp_path / "rel")
    rows = np.empty((4, 2), dtype=object)
    for i, (item, vector) in enumerate(zip(["h3", "h1", "extra", "h2"], vectors, strict=True)):
        rows[i, 0], rows[i, 1] = item, vector
    np.save(root / "ugallery_resnet50_embeddings.npy", rows, allow_pickle=True)
    dataset, _ = import_ugallery_release(*_release_args(root), trust_pickle=True)
    np.testing.assert_allclose(dataset.features[0], vectors[1], rtol=1e-6)  # h1
