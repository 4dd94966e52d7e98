"""The profile terms added to the towers' scores: the nearest purchase, the profile's mean
look, and the artwork's sales.

The user tower pools a profile into one vector, so a customer who bought from three unrelated
styles gets a vector between them, and an artwork just like one of the three can rank below
artworks like none of them. The paper's own baseline, VisRank with max pooling, scores each
candidate by its best-matching purchase instead, and on the real UGallery sales it beats the
pooled towers on R@20. VisRank with mean pooling, the profile's average look, has the best AUC
of the baselines on the marketplace, and past sales carry an appeal that pixels do not show.
These terms add those views back:

    score(profile, item) = user(profile) . item
                           + w_max  * max over p in profile of cos(m_p, m_item)
                           + w_mean * mean over p in profile of cos(m_p, m_item)
                           + w_pop  * log(1 + sales of item so far)
                           + w_co   * copurchase(profile, item)  (training/copurchase.py,
                           + w_ease * ease(profile, item)          item-kNN's and EASE's W)
                           + w_new  * exp(-(the item's age at the query's time) / tau)
                           + w_era  * exp(-(days from the item's upload to the closest
                                            upload day of the profile's items) / tau_era)

The last is freshness: a gallery's new uploads are what sells (on the real UGallery sales the
artworks bought were listed far more recently than the rest of the inventory; an artwork that
stays unsold for years has been passed over), and a one-of-a-kind catalogue is mostly artworks
nobody has bought yet, which the sales terms cannot tell apart. tau (`freshness_days`) is
chosen with its weight; without times (the holdout protocol, or items without upload times)
the term is 0.

The era term asks when the profile's artworks were listed: customers shop in spells, and what
they buy was listed around the same time as what they bought before. It needs no query time, so
it is what the holdout protocol (whose tests have none) can use; on the replay, freshness says
more. Days are whole upload days (floor of upload_time / 86,400 s).

where m is the artwork's match vector: its features z-scored and projected onto their top
principal components (`nearest_purchase_dim`, 128 by default: on UGallery's validation the term
with 128 components did as well as with all 2,048 dimensions, at a 16th of the serving cost),
L2-normalised. The weights are chosen together after training on the validation split
(training/train.py), each among its configured grid, which always includes 0: a term is used only
where validation says it helps.

Saved as `nearest_purchase.npz` (plain arrays, loaded with allow_pickle=False) in a run's
`model/` and in an export; the service adds the same terms (serving/catalogue.py).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from training.atomic import write_npz_atomic
from training.data.features import CHUNK_ROWS, zscore_stats

FILE_NAME = "nearest_purchase.npz"
OPTIONAL_WEIGHTS = (
    "mean_weight",
    "popularity_weight",
    "copurchase_weight",
    "freshness_weight",
    "freshness_days",
    "era_weight",
    "era_days",
    "ease_weight",
)
DAY_SECONDS = 86_400.0
PCA_SAMPLE_ROWS = 20_000  # rows the principal components are computed on


@dataclass(frozen=True)
class TermWeights:
    """w_max, w_mean, w_pop, w_co (the co-purchase term, training/copurchase.py), w_new and
    w_era of the module docstring's formula, the freshness and era terms' taus in days, and
    w_ease (the co-purchase term over EASE's weights; last, so that positional construction
    from before it still holds)."""

    nearest: float = 0.0
    mean: float = 0.0
    popularity: float = 0.0
    copurchase: float = 0.0
    freshness: float = 0.0
    freshness_days: float = 0.0  # tau; used only where `freshness` is above 0
    era: float = 0.0
    era_days: float = 0.0  # tau_era; used only where `era` is above 0
    ease: float = 0.0

    @property
    def any(self) -> bool:
        return (
            self.nearest > 0
            or self.mean > 0
            or self.popularity > 0
            or self.copurchase > 0
            or self.ease > 0
            or self.freshness > 0
            or self.era > 0
        )

    @property
    def uses_profile(self) -> bool:
        return self.nearest > 0 or self.mean > 0


@dataclass(frozen=True)
class NearestPurchase:
    mean: np.ndarray  # [feature_dim] float64
    scale: np.ndarray  # [feature_dim] float64: 1 / std
    projection: np.ndarray  # [feature_dim, dim] float32, orthonormal columns
    weight: float  # w_max: the nearest purchase
    mean_weight: float = 0.0  # w_mean: the profile's mean match vector
    popularity_weight: float = 0.0  # w_pop: log(1 + the artwork's sales)
    copurchase_weight: float = 0.0  # w_co: training/copurchase.py's term
    freshness_weight: float = 0.0  # w_new: exp(-age / tau)
    freshness_days: float = 0.0  # tau
    era_weight: float = 0.0  # w_era: exp(-days to the profile's closest upload day / tau_era)
    era_days: float = 0.0  # tau_era
    ease_weight: float = 0.0  # w_ease: training/copurchase.py's term over EASE's weights

    @classmethod
    def fit(cls, features: np.ndarray, dim: int = 128, *, seed: int = 0) -> NearestPurchase:
        """z-score statistics and the top `dim` principal components of `features` (at most
        PCA_SAMPLE_ROWS rows, sampled with `seed`); weight 0 until calibrated."""
        mean, std = zscore_stats(features)
        rows = np.arange(features.shape[0])
        if rows.size > PCA_SAMPLE_ROWS:
            rows = np.sort(np.random.default_rng(seed).choice(rows, PCA_SAMPLE_ROWS, replace=False))
        sample = (np.asarray(features[rows], np.float64) - mean) / std
        sample -= sample.mean(axis=0)
        _, _, components = np.linalg.svd(sample, full_matrices=False)  # [min(n, d), d]
        dim = min(dim, components.shape[0])
        return cls(mean, 1.0 / std, components[:dim].T.astype(np.float32), 0.0)

    def with_weight(self, weight: float) -> NearestPurchase:
        return replace(self, weight=float(weight))

    def with_weights(self, weights: TermWeights) -> NearestPurchase:
        return replace(
            self,
            weight=float(weights.nearest),
            mean_weight=float(weights.mean),
            popularity_weight=float(weights.popularity),
            copurchase_weight=float(weights.copurchase),
            freshness_weight=float(weights.freshness),
            freshness_days=float(weights.freshness_days),
            era_weight=float(weights.era),
            era_days=float(weights.era_days),
            ease_weight=float(weights.ease),
        )

    @property
    def weights(self) -> TermWeights:
        return TermWeights(
            self.weight,
            self.mean_weight,
            self.popularity_weight,
            self.copurchase_weight,
            self.freshness_weight,
            self.freshness_days,
            self.era_weight,
            self.era_days,
            self.ease_weight,
        )

    @property
    def feature_dim(self) -> int:
        return self.projection.shape[0]

    @property
    def dim(self) -> int:
        return self.projection.shape[1]

    def vectors(self, features: np.ndarray) -> np.ndarray:
        """Match vectors [n, dim] float32 of `features` [n, feature_dim], unit length (a
        constant artwork's stays zero), in chunks (features may be memory-mapped)."""
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(
                f"nearest purchase: features of shape {features.shape}, "
                f"expected [n, {self.feature_dim}]"
            )
        chunks = []
        for start in range(0, features.shape[0], CHUNK_ROWS):
            chunk = np.asarray(features[start : start + CHUNK_ROWS], np.float64)
            projected = ((chunk - self.mean) * self.scale).astype(np.float32) @ self.projection
            norms = np.linalg.norm(projected, axis=1, keepdims=True)
            chunks.append(projected / np.maximum(norms, 1e-12))
        if not chunks:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(chunks).astype(np.float32)

    def save(self, directory: Path | str) -> Path:
        path = Path(directory) / FILE_NAME
        arrays = {
            "mean": self.mean,
            "scale": self.scale,
            "projection": self.projection,
            "weight": np.float64(self.weight),
            "mean_weight": np.float64(self.mean_weight),
            "popularity_weight": np.float64(self.popularity_weight),
            "copurchase_weight": np.float64(self.copurchase_weight),
            "freshness_weight": np.float64(self.freshness_weight),
            "freshness_days": np.float64(self.freshness_days),
            "era_weight": np.float64(self.era_weight),
            "era_days": np.float64(self.era_days),
            "ease_weight": np.float64(self.ease_weight),
        }
        write_npz_atomic(path, arrays)
        return path

    @classmethod
    def load(cls, path: Path | str) -> NearestPurchase:
        """Reads and checks a saved term (ValueError saying what is wrong)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {key: saved[key] for key in ("mean", "scale", "projection", "weight")}
                for key in OPTIONAL_WEIGHTS:  # absent in files written before these terms
                    arrays[key] = saved[key] if key in saved.files else np.float64(0.0)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path}: not a nearest-purchase file ({error})") from error
        mean, scale, projection = arrays["mean"], arrays["scale"], arrays["projection"]
        weight = arrays["weight"]
        d = mean.shape[0] if mean.ndim == 1 else -1
        if (
            d < 1
            or scale.shape != (d,)
            or projection.ndim != 2
            or projection.shape[0] != d
            or any(arrays[key].shape != () for key in ("weight", *OPTIONAL_WEIGHTS))
        ):
            raise ValueError(
                f"{path}: inconsistent shapes mean {mean.shape}, scale {scale.shape}, "
                f"projection {projection.shape}, weight {weight.shape}"
            )
        for name, array in arrays.items():
            if array.dtype.kind != "f" or not np.isfinite(array).all():
                raise ValueError(f"{path}: {name} is not all finite floats")
        for key in ("weight", *OPTIONAL_WEIGHTS):
            if float(arrays[key]) < 0:
                raise ValueError(f"{path}: {key} {float(arrays[key])} is negative")
        for term in ("freshness", "era"):
            if float(arrays[f"{term}_weight"]) > 0 and float(arrays[f"{term}_days"]) <= 0:
                raise ValueError(f"{path}: {term}_weight above 0 needs {term}_days above 0")
        return cls(
            mean.astype(np.float64),
            scale.astype(np.float64),
            projection.astype(np.float32),
            float(weight),
            float(arrays["mean_weight"]),
            float(arrays["popularity_weight"]),
            float(arrays["copurchase_weight"]),
            float(arrays["freshness_weight"]),
            float(arrays["freshness_days"]),
            float(arrays["era_weight"]),
            float(arrays["era_days"]),
            float(arrays["ease_weight"]),
        )


def max_similarity(
    match_vectors: np.ndarray, profiles: Sequence[np.ndarray], candidates: np.ndarray
) -> np.ndarray:
    """[B, n_candidates]: for each profile (catalogue rows, non-empty), the cosine of each
    candidate to its closest profile artwork. Artworks shared by profiles are scored once."""
    stacked = np.concatenate([np.asarray(p, np.int64) for p in profiles])
    distinct, position = np.unique(stacked, return_inverse=True)
    similarity = match_vectors[candidates] @ match_vectors[distinct].T  # [n_cand, n_distinct]
    return closest_per_profile(similarity.T, position, [len(p) for p in profiles])


def mean_similarity(
    match_vectors: np.ndarray, profiles: Sequence[np.ndarray], candidates: np.ndarray
) -> np.ndarray:
    """[B, n_candidates]: for each profile, the mean cosine of each candidate to its artworks
    (the candidate's match vector times the profile's mean match vector)."""
    means = profile_means(match_vectors, profiles)
    return means @ match_vectors[candidates].T


def profile_means(match_vectors: np.ndarray, profiles: Sequence[np.ndarray]) -> np.ndarray:
    """[B, dim]: each profile's mean match vector (not renormalised: its dot product with a
    match vector is the mean cosine)."""
    return np.stack([match_vectors[np.asarray(p, np.int64)].mean(axis=0) for p in profiles])


def sales_bonus(sales: np.ndarray) -> np.ndarray:
    """log(1 + sales): what the popularity weight multiplies."""
    return np.log1p(np.asarray(sales, np.float64))


def freshness(ages: np.ndarray, days: float) -> np.ndarray:
    """exp(-age / tau) for `ages` in seconds (an artwork uploaded after the query's time counts
    as new; an infinite age, as in the holdout protocol, gives 0): what the freshness weight
    multiplies, float32."""
    ages = np.maximum(np.asarray(ages, np.float64), 0.0)
    return np.exp(-ages / (days * DAY_SECONDS)).astype(np.float32)


def upload_days(upload_times: np.ndarray) -> np.ndarray:
    """Whole upload days (float64) of upload times in seconds: what the era term compares."""
    return np.floor(np.asarray(upload_times, np.float64) / DAY_SECONDS)


def era_closeness(
    candidate_days: np.ndarray, profiles_days: Sequence[np.ndarray], days: float
) -> np.ndarray:
    """[len(profiles_days), n] float32: exp(-(whole days from each of the n `candidate_days` to
    the closest of a profile's `profiles_days`) / tau), what the era weight multiplies. One
    sorted search for the whole batch: each profile's days are shifted into a range of their
    own, so a search lands among that profile's days (none may be empty)."""
    candidate_days = np.asarray(candidate_days, np.float64)
    marks = [np.unique(np.asarray(profile, np.float64)) for profile in profiles_days]
    if any(m.size == 0 for m in marks):
        raise ValueError("era_closeness: every profile needs at least one upload day")
    every = np.concatenate([candidate_days, *marks])
    low, spread = every.min(), every.max() - every.min()
    shifts = np.arange(len(marks)) * (2 * spread + 2)  # disjoint ranges, one per profile
    ends = np.cumsum([m.size for m in marks])  # each profile's marks: [ends - size, ends)
    starts = ends - np.array([m.size for m in marks])
    shifted = np.concatenate([m - low + shift for m, shift in zip(marks, shifts, strict=True)])
    queries = (candidate_days - low)[None, :] + shifts[:, None]  # [b, n]
    at = np.searchsorted(shifted, queries)
    before = shifted[np.clip(at - 1, starts[:, None], ends[:, None] - 1)]
    after = shifted[np.clip(at, starts[:, None], ends[:, None] - 1)]
    gap = np.minimum(np.abs(queries - before), np.abs(after - queries))
    return np.exp(-gap / days).astype(np.float32)


def closest_per_profile(
    similarity: np.ndarray, position: np.ndarray, lengths: Sequence[int]
) -> np.ndarray:
    """[B, n]: per profile, the max over its artworks' rows of `similarity` [n_distinct, n];
    `position` (from np.unique's inverse) gives each profile artwork's row, profile after
    profile, `lengths` their sizes. A max per profile: 20x faster than np.maximum.reduceat."""
    closest = np.empty((len(lengths), similarity.shape[1]), similarity.dtype)
    start = 0
    for i, length in enumerate(lengths):
        np.max(similarity[position[start : start + length]], axis=0, out=closest[i])
        start += length
    return closest


def load_if_present(directory: Path | str) -> NearestPurchase | None:
    path = Path(directory) / FILE_NAME
    return NearestPurchase.load(path) if path.exists() else None
