"""Purchase histories: baskets in time order, the paper's split, artists, visual clusters."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.data.dataset import Dataset
from training.data.features import zscore


def baskets(purchases: pd.DataFrame) -> pd.DataFrame:
    """One row per basket (same user, same timestamp), ordered by time, then user.

    Columns: user_id, time, items (int64 array of catalogue rows, purchase order kept),
    number (0-based basket number of its user), n_baskets (the user's basket count).
    """
    if not np.isfinite(purchases["timestamp"].to_numpy()).all():
        raise ValueError("purchases have no timestamps: baskets and time order are undefined")
    ordered = purchases.sort_values(["timestamp", "user_id"], kind="stable")
    users, times = ordered["user_id"].to_numpy(), ordered["timestamp"].to_numpy()
    starts = np.flatnonzero(
        np.concatenate([[True], (users[1:] != users[:-1]) | (times[1:] != times[:-1])])
    )
    items = np.split(ordered["item"].to_numpy(dtype=np.int64), starts[1:])
    result = pd.DataFrame({"user_id": users[starts], "time": times[starts], "items": items})
    by_user = result.groupby("user_id", sort=False)
    result["number"] = by_user.cumcount()
    result["n_baskets"] = by_user["time"].transform("size")
    return result.reset_index(drop=True)


def sold_originals(dataset: Dataset, purchase_tables=None) -> np.ndarray:
    """[n_items] bool: the one-of-a-kind artworks bought in any of `purchase_tables` (tables
    with an `item` column of catalogue rows; default: the dataset's purchases). A sold
    original has left the gallery: it is no longer for sale."""
    bought = np.zeros(dataset.n_items, dtype=bool)
    for table in [dataset.purchases] if purchase_tables is None else purchase_tables:
        bought[table["item"].to_numpy()] = True
    return bought & dataset.items["one_of_a_kind"].to_numpy(dtype=bool)


def paper_split(purchases: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, hidden): each user's last basket is hidden when the user has two or more."""
    table = baskets(purchases)
    hidden_keys = table.loc[
        (table["n_baskets"] >= 2) & (table["number"] == table["n_baskets"] - 1),
        ["user_id", "time"],
    ]
    keys = pd.MultiIndex.from_frame(purchases[["user_id", "timestamp"]])
    hidden = keys.isin(pd.MultiIndex.from_frame(hidden_keys))
    return purchases[~hidden].reset_index(drop=True), purchases[hidden].reset_index(drop=True)


def artist_index(items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(codes [n_items] int64, artist_ids): code -1 where an item has no artist."""
    artists = items["artist_id"].astype(str).to_numpy()
    codes, uniques = pd.factorize(np.where(artists == "", None, artists), use_na_sentinel=True)
    return codes.astype(np.int64), np.asarray(uniques, dtype=str)


def artist_sell_through(
    items: pd.DataFrame, purchases: pd.DataFrame, artist_ids: list[str] | np.ndarray
) -> np.ndarray:
    """Each artist's log sell-through rate, log((sales + 1) / (listed + 1)), counted up to the
    last of `purchases` (artworks uploaded later are not counted as listed; untimed purchases
    count every artwork) and centred on the average listed artwork, so an unknown artist (0) is
    a typical one. [len(artist_ids)]"""
    times = purchases["timestamp"].to_numpy()
    cutoff = times.max() if np.isfinite(times).all() else np.inf
    artists = items["artist_id"].to_numpy().astype(str)
    listed = pd.Series(artists[items["upload_time"].to_numpy() <= cutoff]).value_counts()
    sales = pd.Series(artists[purchases["item"].to_numpy()]).value_counts()
    artist_ids = pd.Index(np.asarray(artist_ids, dtype=str))
    rate = np.log(
        (sales.reindex(artist_ids, fill_value=0).to_numpy() + 1.0)
        / (listed.reindex(artist_ids, fill_value=0).to_numpy() + 1.0)
    )
    weight = listed.reindex(artist_ids, fill_value=0).to_numpy()
    centre = np.average(rate, weights=weight) if weight.sum() else rate.mean()
    return rate - centre


def visual_clusters(
    dataset: Dataset, *, n_clusters: int = 100, pca_dim: int = 128, seed: int = 0
) -> np.ndarray:
    """k-means cluster of each item [n_items] over z-scored, PCA-reduced features."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    if not 1 <= n_clusters <= dataset.n_items:
        raise ValueError(f"n_clusters must be in [1, {dataset.n_items}], got {n_clusters}")
    standardized = zscore(dataset.features)  # [n_items, d]
    n_components = min(pca_dim, *standardized.shape)
    reduced = PCA(n_components=n_components, random_state=seed).fit_transform(standardized)
    kmeans = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed)
    return kmeans.fit_predict(reduced).astype(np.int64)


def check_holdout_fraction(fraction: float) -> None:
    """ValueError naming `--fraction` unless 0 < fraction < 0.5 (test and valid take a share
    each, and training keeps the rest)."""
    if not 0.0 < fraction < 0.5:
        raise ValueError(
            "--fraction must be in (0, 0.5): the share of each user's artworks held out for "
            f"test, and as many again for valid; got {fraction}"
        )


def holdout_split(
    dataset: Dataset, *, fraction: float = 0.2, min_items: int = 3, seed: int = 0
) -> Dataset:
    """A copy of `dataset` with a fixed holdout split: for each user with at least `min_items`
    distinct purchased artworks, `fraction` of them (at least one) move to test.csv and as many
    again to valid.csv, chosen at random (seeded); purchases.csv keeps the rest."""
    check_holdout_fraction(fraction)
    if dataset.valid is not None or dataset.test is not None:
        raise ValueError(
            "the dataset already has a holdout split (valid.csv, test.csv): a new one splits "
            "purchases.csv alone, so those purchases would be lost; use the split it has"
        )
    rng = np.random.default_rng(seed)
    purchases = dataset.purchases
    held = {"valid": [], "test": []}
    for _, rows in purchases.groupby("user_id", sort=True):
        distinct = rows.drop_duplicates("item")
        if len(distinct) < min_items:
            continue
        n_held = max(1, round(fraction * len(distinct)))
        if len(distinct) - 2 * n_held < 1:
            continue
        chosen = distinct.index.to_numpy()[rng.permutation(len(distinct))[: 2 * n_held]]
        held["test"].append(chosen[:n_held])
        held["valid"].append(chosen[n_held:])
    if not held["test"]:
        raise ValueError(
            f"nothing to hold out: no customer has {min_items} or more distinct artworks with "
            f"at least one left to train on at fraction {fraction}"
        )
    test_rows, valid_rows = (np.concatenate(held[s]).astype(int) for s in ("test", "valid"))
    held_items = purchases.loc[np.concatenate([test_rows, valid_rows]), ["user_id", "item"]]
    held_keys = pd.MultiIndex.from_frame(held_items)
    keep = ~pd.MultiIndex.from_frame(purchases[["user_id", "item"]]).isin(held_keys)
    split = ["user_id", "item_id", "item"]
    return Dataset(
        items=dataset.items,
        features=dataset.features,
        purchases=purchases[keep].reset_index(drop=True),
        valid=purchases.loc[valid_rows, split].reset_index(drop=True),
        test=purchases.loc[test_rows, split].reset_index(drop=True),
        truth=dataset.truth,
    )
