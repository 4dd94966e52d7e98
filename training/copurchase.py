"""The co-purchase term: what customers who bought the profile's artworks also bought.

Where the same items sell to many customers (prints, most shops' catalogues), what was bought
together says more than pixels: on such benchmarks item-to-item baselines beat visual ones. The
towers learn that only through id embeddings; this term adds it directly, as item-kNN does:

    copurchase(profile, item) = sum over p in profile of W[p, item] / (that sum's largest value
                                over the catalogue)

W is the cosine similarity between two artworks' buyer sets in the fitted purchases (each row
keeping its `neighbours` largest; training/item_item.py's `knn_weights`),
and dividing by the profile's largest sum puts the term in [0, 1] whatever the profile's length,
the scale of the other terms. An artwork that never sold, and a profile none of whose artworks
sold with another, get 0: on one-of-a-kind catalogues validation keeps this term's weight at 0.

Saved as `copurchase.npz` (the fitted artworks' ids and W's CSR arrays, loaded with
allow_pickle=False) beside nearest_purchase.npz; W is fixed at training (purchases recorded by
the service do not change it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from training.atomic import write_npz_atomic
from training.item_item import interactions, knn_weights, profile_indicators

FILE_NAME = "copurchase.npz"
NEIGHBOURS = 50  # per artwork: on an Amazon-like synthetic 50 and 200 validated alike


@dataclass(frozen=True)
class CoPurchase:
    item_ids: np.ndarray  # [n_fit] str: the artworks that sold in the fitted purchases
    weights: sp.csr_matrix  # [n_fit, n_fit] float32 W, rows and columns in item_ids' order

    @classmethod
    def fit(
        cls, purchases: pd.DataFrame, item_ids: np.ndarray, neighbours: int = NEIGHBOURS
    ) -> CoPurchase:
        """W over `purchases` (catalogue rows in "item", customers in "user_id"); `item_ids`
        names the catalogue's rows."""
        matrix, rows = interactions(purchases)
        weights = knn_weights(matrix, neighbours).astype(np.float32)
        return cls(np.asarray(item_ids).astype(str)[rows], sp.csr_matrix(weights))

    def on_catalogue(self, catalogue_ids: Sequence[str] | np.ndarray) -> sp.csr_matrix:
        """W as [n, n] over a catalogue's rows (`catalogue_ids`, row order); artworks the
        catalogue lacks are dropped, and its other artworks have empty rows and columns."""
        catalogue_ids = np.asarray(catalogue_ids).astype(str)
        n = catalogue_ids.size
        if n == 0:
            return sp.csr_matrix((0, 0), dtype=np.float32)
        order = np.argsort(catalogue_ids, kind="stable")
        ordered = catalogue_ids[order]
        found = np.minimum(np.searchsorted(ordered, self.item_ids), n - 1)
        target = np.where(ordered[found] == self.item_ids, order[found], -1)  # [n_fit] or -1
        coo = self.weights.tocoo()
        keep = (target[coo.row] >= 0) & (target[coo.col] >= 0)
        return sp.csr_matrix(
            (coo.data[keep], (target[coo.row[keep]], target[coo.col[keep]])),
            shape=(n, n),
            dtype=np.float32,
        )

    def save(self, directory: Path | str) -> Path:
        path = Path(directory) / FILE_NAME
        arrays = {
            "item_ids": self.item_ids.astype(str),
            "indptr": self.weights.indptr.astype(np.int64),
            "indices": self.weights.indices.astype(np.int64),
            "data": self.weights.data.astype(np.float32),
        }
        write_npz_atomic(path, arrays)
        return path

    @classmethod
    def load(cls, path: Path | str) -> CoPurchase:
        """Reads and checks a saved term (ValueError saying what is wrong)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as saved:
                ids, indptr, indices, data = (
                    saved[key] for key in ("item_ids", "indptr", "indices", "data")
                )
        except (OSError, KeyError, ValueError) as error:
            raise ValueError(f"{path}: not a co-purchase file ({error})") from error
        n = ids.shape[0] if ids.ndim == 1 else -1
        if (
            n < 0
            or ids.dtype.kind != "U"
            or np.unique(ids).size != n
            or indptr.shape != (n + 1,)
            or indptr.dtype.kind != "i"
            or indices.dtype.kind != "i"
            or indices.shape != data.shape
            or indptr[0] != 0
            or indptr[-1] != indices.size
            or np.any(np.diff(indptr) < 0)
            or (indices.size and (indices.min() < 0 or indices.max() >= n))
        ):
            raise ValueError(f"{path}: inconsistent co-purchase arrays")
        if data.dtype.kind != "f" or not np.isfinite(data).all() or (data < 0).any():
            raise ValueError(f"{path}: weights are not all finite non-negative floats")
        weights = sp.csr_matrix((data.astype(np.float32), indices, indptr), shape=(n, n))
        return cls(ids.astype(str), weights)


def profile_scores(weights: sp.csr_matrix, profiles: Sequence[np.ndarray]) -> sp.csr_matrix:
    """[B, n] sparse: per profile (rows of `weights`' catalogue), the term of the module
    docstring for every artwork (the summed rows, each divided by its largest value)."""
    queries = profile_indicators(profiles, weights.shape[0], np.float32)
    summed = (queries @ weights).tocsr()
    summed.sum_duplicates()
    largest = summed.max(axis=1).toarray().ravel()  # [B]; 0 where nothing co-sold
    scale = np.divide(1.0, largest, out=np.zeros_like(largest), where=largest > 0)
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ summed)


def load_if_present(directory: Path | str) -> CoPurchase | None:
    path = Path(directory) / FILE_NAME
    return CoPurchase.load(path) if path.exists() else None
