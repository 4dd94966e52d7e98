"""The co-purchase terms: what customers who bought the profile's artworks also bought.

Where the same items sell to many customers (prints, most shops' catalogues), what was bought
together says more than pixels: on such benchmarks item-to-item baselines beat visual ones. The
towers learn that only through id embeddings; these terms add it directly, as the item-to-item
baselines do:

    copurchase(profile, item) = sum over p in profile of W[p, item] / (the largest |sum| over
                                the catalogue)

for two weight matrices W over the fitted purchases, each with its own weight (`TermWeights.
copurchase` and `.ease`):

- "item-knn" (copurchase.npz): the cosine similarity between two artworks' buyer sets, each
  row keeping its `NEIGHBOURS` largest (training/item_item.py's `knn_weights`);
- "ease" (ease.npz): EASE^R's weights (`ease_weights`), its L2 weight chosen on the validation
  as the `ease` baseline chooses it, each row keeping its largest by |w| (`ease_neighbours`: a
  total budget of weights shared out over the rows, at least `EASE_NEIGHBOURS` each).
  EASE's weights are negative where an artwork is bought instead of another, which cosine
  cannot say; on a shop-like synthetic where co-purchases carry most of the signal, it beside
  item-kNN raised validation R@20 from .1151 to .1211-.1239 (docs/training.md).

Dividing by the profile's largest |sum| puts each term in [-1, 1] whatever the profile's length,
the scale of the other terms. An artwork that never sold, and a profile none of whose artworks
sold with another, get 0: on one-of-a-kind catalogues validation keeps these weights at 0.

Saved beside nearest_purchase.npz (the fitted artworks' ids, W's CSR arrays and the kind,
loaded with allow_pickle=False); W is fixed at training (purchases recorded by the service do
not change it).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from training.atomic import write_npz_atomic
from training.item_item import (
    ease_weights,
    interactions,
    keep_strongest,
    knn_weights,
    profile_indicators,
)

FILE_NAMES = {"item-knn": "copurchase.npz", "ease": "ease.npz"}  # per kind
# per kind, the field that weights it (TermWeights, the run's term and the export manifest)
WEIGHT_FIELDS = {"item-knn": "copurchase_weight", "ease": "ease_weight"}
FILE_NAME = FILE_NAMES["item-knn"]
EASE_FILE_NAME = FILE_NAMES["ease"]
NEIGHBOURS = 50  # per artwork: on an Amazon-like synthetic 50 and 200 validated alike
# the least kept per artwork, by |w|: on the noisier shop-like synthetic (5,400 sold artworks)
# 300 and 1,000 validated as the dense matrix did (R@20 .1211-.1240), 100 a little lower
EASE_NEIGHBOURS = 300
# the most kept in all where rows keep more than EASE_NEIGHBOURS (about 18 MB in ease.npz): on
# MovieLens-100K (1,423 sold movies, 57 purchases per customer) 300 per row kept the blend below
# EASE's own R@20 and 1,000 per row lifted every validation figure (docs/training.md)
EASE_WEIGHT_BUDGET = 1_500_000


def ease_neighbours(n_rows: int) -> int:
    """The weights each row of an EASE W over `n_rows` artworks keeps: `EASE_WEIGHT_BUDGET`
    shared out over the rows, at least `EASE_NEIGHBOURS` (at 5,000 rows and more, the least)."""
    return max(EASE_NEIGHBOURS, EASE_WEIGHT_BUDGET // max(n_rows, 1))


@dataclass(frozen=True)
class CoPurchase:
    item_ids: np.ndarray  # [n_fit] str: the artworks that sold in the fitted purchases
    weights: sp.csr_matrix  # [n_fit, n_fit] float32 W, rows and columns in item_ids' order
    kind: str = "item-knn"  # or "ease" (the module docstring)

    @property
    def file_name(self) -> str:
        return FILE_NAMES[self.kind]

    @classmethod
    def fit_ease(
        cls,
        purchases: pd.DataFrame,
        item_ids: np.ndarray,
        l2: float,
        neighbours: int | None = None,
    ) -> CoPurchase:
        """EASE^R's W over `purchases` with L2 weight `l2`, each row's `neighbours` strongest
        by |w| (default `ease_neighbours`; catalogue rows in "item", customers in "user_id";
        `item_ids` names the rows)."""
        matrix, rows = interactions(purchases)
        ids = np.asarray(item_ids).astype(str)[rows]
        return cls.of_ease(ids, ease_weights(matrix, l2), neighbours)

    @classmethod
    def of_ease(
        cls, item_ids: np.ndarray, weights: sp.spmatrix, neighbours: int | None = None
    ) -> CoPurchase:
        """The EASE kind from a fitted EASE W over `item_ids` (e.g. the `ease` baseline's),
        each row keeping its `neighbours` strongest by |w| (default `ease_neighbours`)."""
        weights = sp.csr_matrix(weights)
        if neighbours is None:
            neighbours = ease_neighbours(weights.shape[0])
        strongest = keep_strongest(weights, neighbours, by_magnitude=True)
        return cls(np.asarray(item_ids).astype(str), strongest.astype(np.float32), "ease")

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
        path = Path(directory) / self.file_name
        arrays = {
            "kind": np.array(self.kind),
            "item_ids": self.item_ids.astype(str),
            "indptr": self.weights.indptr.astype(np.int64),
            "indices": self.weights.indices.astype(np.int64),
            "data": self.weights.data.astype(np.float32),
        }
        write_npz_atomic(path, arrays)
        return path

    @classmethod
    def load(cls, path: Path | str, expected: str | None = None) -> CoPurchase:
        """Reads and checks a saved term, of kind `expected` if given (ValueError saying what
        is wrong)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as saved:
                ids, indptr, indices, data = (
                    saved[key] for key in ("item_ids", "indptr", "indices", "data")
                )
                # files written before the EASE term have no kind: item-kNN
                kind = saved["kind"] if "kind" in saved.files else np.array("item-knn")
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path}: not a co-purchase file ({error})") from error
        if kind.shape != () or kind.dtype.kind != "U" or str(kind) not in FILE_NAMES:
            shown = str(kind)[:40] if kind.dtype.kind == "U" else kind.dtype
            raise ValueError(f"{path}: kind {shown!r} is not one of {sorted(FILE_NAMES)}")
        kind = str(kind)
        if expected is not None and kind != expected:
            raise ValueError(f"{path} holds the {kind} kind, expected {expected}")
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
        if data.dtype.kind != "f":
            raise ValueError(f"{path}: weights are {data.dtype}, not floats")
        with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, refused below
            data = data.astype(np.float32)
        if not np.isfinite(data).all():
            raise ValueError(f"{path}: weights are not all finite float32 values")
        if kind == "item-knn" and (data < 0).any():
            raise ValueError(f"{path}: item-kNN weights are cosines, and some are negative")
        weights = sp.csr_matrix((data, indices, indptr), shape=(n, n))
        return cls(ids.astype(str), weights, kind)


def profile_scores(weights: sp.csr_matrix, profiles: Sequence[np.ndarray]) -> sp.csr_matrix:
    """[B, n] sparse: per profile (rows of `weights`' catalogue), the term of the module
    docstring for every artwork (the summed rows, each divided by its largest |value|)."""
    queries = profile_indicators(profiles, weights.shape[0], np.float32)
    summed = (queries @ weights).tocsr()
    summed.sum_duplicates()
    largest = abs(summed).max(axis=1).toarray().ravel()  # [B]; 0 where nothing co-sold
    scale = np.divide(1.0, largest, out=np.zeros_like(largest), where=largest > 0)
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ summed)


def load_if_present(directory: Path | str, kind: str = "item-knn") -> CoPurchase | None:
    """The saved term of `kind` in `directory`, if any (ValueError if its file says another
    kind)."""
    path = Path(directory) / FILE_NAMES[kind]
    if not path.exists():
        return None
    return CoPurchase.load(path, kind)
