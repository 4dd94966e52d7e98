"""A seeded simulator of an online art store, written as a native dataset.

The generative story (every knob is a MarketplaceConfig field):
- `n_styles` visual styles are unit directions in a `latent_dim` space; styles differ in how
  common they are (Dirichlet weights).
- Each artist works mostly in one style: artist vector = style + artist_spread * noise. Artists
  differ in productivity (log-normal) and in appeal.
- Each artwork = its artist's vector + item_spread * noise; its 2048-d features are that latent
  vector rendered by FeatureRenderer (non-negative, sparse-ish, like pooled ResNet-50 output) plus
  per-image noise. Appeal = artist appeal + item appeal. `one_of_a_kind_share` are originals.
- Uploads: `backlist_share` of the catalogue in the year before sales start, the rest uniformly
  over `years` of sales.
- Customers' taste mixes 1 + Poisson(0.6) styles (Dirichlet weights) plus a personal offset.
  True preference (what SimulatorTruth stores, the `ideal` ranking):
      utility(c, i) = taste_strength * taste_c . latent_i + appeal_i
- Each customer's first basket falls uniformly in the sales period; `repeat_share` of customers
  come back 1 + Geometric more times, `gap_days` apart on average (later baskets past the end are
  dropped). Basket sizes follow `basket_size_probs`.
- At a basket's time the customer browses what is for sale (uploaded, and not an original already
  sold; at most `browse_limit` random artworks of it) and picks the best by
      utility + novelty_boost * exp(-age / novelty_days) + choice_noise * Gumbel,
  i.e. a softmax choice in which new uploads get extra exposure. Sold originals leave the store.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.atomic import atomic_directory
from training.data.dataset import SimulatorTruth, load_dataset, write_tables
from training.data.features import FeatureRenderer, unit_rows, write_npy_chunks

DAY = 86_400.0
SALES_START = 1_388_534_400.0  # 2014-01-01T00:00:00Z, as in UGallery's sales
UGALLERY_ITEMS, UGALLERY_ARTISTS, UGALLERY_CUSTOMERS = 13_297, 600, 2_900


@dataclass(frozen=True)
class MarketplaceConfig:
    n_items: int = UGALLERY_ITEMS
    n_artists: int = UGALLERY_ARTISTS
    n_customers: int = UGALLERY_CUSTOMERS
    n_styles: int = 40
    latent_dim: int = 32
    feature_dim: int = 2048
    feature_noise: float = 0.6
    years: float = 4.0
    backlist_share: float = 0.25
    one_of_a_kind_share: float = 0.78
    artist_spread: float = 0.6
    item_spread: float = 0.45
    taste_spread: float = 0.4
    taste_strength: float = 4.0
    artist_appeal: float = 0.5
    item_appeal: float = 0.6
    choice_noise: float = 1.0
    novelty_boost: float = 1.0
    novelty_days: float = 60.0
    repeat_share: float = 0.28
    extra_baskets_mean: float = 3.5
    gap_days: float = 120.0
    basket_size_probs: tuple[float, ...] = (0.78, 0.14, 0.05, 0.03)
    browse_limit: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "n_items",
            "n_artists",
            "n_customers",
            "n_styles",
            "latent_dim",
            "feature_dim",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not np.isclose(sum(self.basket_size_probs), 1.0):
            raise ValueError(f"basket_size_probs must sum to 1, got {self.basket_size_probs}")
        for name in ("backlist_share", "one_of_a_kind_share", "repeat_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @classmethod
    def at_scale(cls, scale: str | int, *, seed: int = 0) -> MarketplaceConfig:
        """`small` (tests, seconds), `ugallery` (the default, UGallery-sized) or a number of
        artworks: artists grow with it, customers up to UGallery's count."""
        if scale == "small":
            return cls(n_items=1_500, n_artists=70, n_customers=500, n_styles=15, seed=seed)
        if scale == "ugallery":
            return cls(seed=seed)
        try:
            n_items = int(scale)
        except ValueError:
            raise ValueError(
                f"scale must be small, ugallery or a number of artworks, got {scale!r}"
            ) from None
        if n_items < 10:
            raise ValueError(f"scale must be at least 10 artworks, got {n_items}")
        ratio = n_items / UGALLERY_ITEMS
        return cls(
            n_items=n_items,
            n_artists=max(3, round(UGALLERY_ARTISTS * ratio)),
            n_customers=max(5, round(UGALLERY_CUSTOMERS * min(ratio, 1.0))),
            seed=seed,
        )


@dataclass(frozen=True)
class _Catalogue:
    latent: np.ndarray  # [n_items, r], ordered by upload time
    appeal: np.ndarray  # [n_items]
    upload_time: np.ndarray  # [n_items] sorted
    artist: np.ndarray  # [n_items]
    one_of_a_kind: np.ndarray  # [n_items] bool


def _catalogue(config: MarketplaceConfig, rng: np.random.Generator):
    r = config.latent_dim
    styles = unit_rows(rng.normal(size=(config.n_styles, r)))  # [S, r]
    style_weight = rng.dirichlet(np.ones(config.n_styles))
    artist_style = rng.choice(config.n_styles, size=config.n_artists, p=style_weight)
    artist_vector = styles[artist_style] + config.artist_spread * rng.normal(
        size=(config.n_artists, r)
    ) / np.sqrt(r)
    artist_appeal = rng.normal(0.0, config.artist_appeal, config.n_artists)
    productivity = rng.lognormal(0.0, 1.0, config.n_artists)

    n = config.n_items
    n_backlist = round(config.backlist_share * n)
    sales_end = SALES_START + config.years * 365.25 * DAY
    upload = np.sort(
        np.concatenate(
            [
                rng.uniform(SALES_START - 365.25 * DAY, SALES_START, n_backlist),
                rng.uniform(SALES_START, sales_end, n - n_backlist),
            ]
        )
    )
    artist = rng.choice(config.n_artists, size=n, p=productivity / productivity.sum())
    latent = artist_vector[artist] + config.item_spread * rng.normal(size=(n, r)) / np.sqrt(r)
    appeal = artist_appeal[artist] + rng.normal(0.0, config.item_appeal, n)
    one_of_a_kind = rng.random(n) < config.one_of_a_kind_share
    catalogue = _Catalogue(latent, appeal, upload, artist, one_of_a_kind)
    return catalogue, styles, style_weight


def _customers(config, styles, style_weight, rng) -> np.ndarray:
    """Taste vectors [n_customers, r], already multiplied by taste_strength."""
    n, r = config.n_customers, config.latent_dim
    tastes = np.empty((n, r))
    for c in range(n):
        k = 1 + rng.poisson(0.6)
        picked = rng.choice(config.n_styles, size=k, p=style_weight)
        tastes[c] = rng.dirichlet(np.ones(k)) @ styles[picked]  # [r]
    tastes += config.taste_spread * rng.normal(size=(n, r)) / np.sqrt(r)
    return config.taste_strength * tastes


def _basket_schedule(config, rng) -> pd.DataFrame:
    """(customer, time, size) of every basket, in time order."""
    sales_end = SALES_START + config.years * 365.25 * DAY
    n = config.n_customers
    first = rng.uniform(SALES_START, sales_end, n)
    extra = np.where(
        rng.random(n) < config.repeat_share, rng.geometric(1.0 / config.extra_baskets_mean, n), 0
    )
    customer = np.repeat(np.arange(n), 1 + extra)
    gaps = rng.exponential(config.gap_days * DAY, customer.size)
    # the first basket of each customer has no gap: zero it, then accumulate per customer
    starts = np.concatenate([[0], np.cumsum(1 + extra)[:-1]])
    gaps[starts] = 0.0
    offsets = np.cumsum(gaps)
    offsets -= np.repeat(offsets[starts], 1 + extra)
    time = first[customer] + offsets
    probs = np.asarray(config.basket_size_probs)
    size = 1 + rng.choice(probs.size, size=customer.size, p=probs)
    schedule = pd.DataFrame({"customer": customer, "time": time, "size": size})
    return schedule[schedule["time"] < sales_end].sort_values("time", kind="stable")


def _simulate_purchases(config, catalogue: _Catalogue, tastes, rng) -> pd.DataFrame:
    sold = np.zeros(config.n_items, dtype=bool)
    rows_customer, rows_item, rows_time = [], [], []
    for customer, time, size in _basket_schedule(config, rng).itertuples(index=False):
        n_uploaded = int(np.searchsorted(catalogue.upload_time, time, side="right"))
        if n_uploaded <= config.browse_limit:
            browsed = np.arange(n_uploaded)
        else:
            browsed = np.unique(rng.integers(0, n_uploaded, config.browse_limit))
        browsed = browsed[~sold[browsed]]
        if browsed.size == 0:
            continue
        age_days = (time - catalogue.upload_time[browsed]) / DAY
        utility = catalogue.latent[browsed] @ tastes[customer] + catalogue.appeal[browsed]
        utility += config.novelty_boost * np.exp(-age_days / config.novelty_days)
        utility += config.choice_noise * rng.gumbel(size=browsed.size)
        take = min(int(size), browsed.size)
        chosen = browsed[np.argpartition(-utility, take - 1)[:take]]
        sold[chosen[catalogue.one_of_a_kind[chosen]]] = True
        rows_customer.append(np.full(take, customer))
        rows_item.append(chosen)
        rows_time.append(np.full(take, time))
    return pd.DataFrame(
        {
            "customer": np.concatenate(rows_customer),
            "item": np.concatenate(rows_item),
            "timestamp": np.concatenate(rows_time),
        }
    )


def generate_marketplace(config: MarketplaceConfig, out: Path | str, *, overwrite: bool = False):
    """Simulate a store and write it as a native dataset (plus truth.npz, marketplace.json and a
    README.md with its statistics). Returns the statistics."""
    rng = np.random.default_rng(config.seed)
    catalogue, styles, style_weight = _catalogue(config, rng)
    tastes = _customers(config, styles, style_weight, rng)
    purchases = _simulate_purchases(config, catalogue, tastes, rng)

    width = max(6, len(str(config.n_items)))
    item_ids = np.char.add("art-", np.char.zfill(np.arange(config.n_items).astype(str), width))
    customer_ids = np.char.add("cust-", np.char.zfill(np.arange(config.n_customers).astype(str), 5))
    artist_ids = np.char.add("artist-", catalogue.artist.astype(str))
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "artist_id": artist_ids,
            "upload_time": catalogue.upload_time,
            "one_of_a_kind": catalogue.one_of_a_kind,
        }
    )
    purchase_table = pd.DataFrame(
        {
            "user_id": customer_ids[purchases["customer"]],
            "item_id": item_ids[purchases["item"]],
            "timestamp": purchases["timestamp"].to_numpy(),
        }
    )
    truth = SimulatorTruth(
        user_ids=customer_ids,
        user_vectors=tastes.astype(np.float32),
        item_vectors=catalogue.latent.astype(np.float32),
        item_bias=catalogue.appeal.astype(np.float32),
    )
    renderer = FeatureRenderer.create(
        latent_dim=config.latent_dim,
        feature_dim=config.feature_dim,
        noise_scale=config.feature_noise,
        seed=config.seed + 1,
    )
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_tables(tmp, items, purchase_table)
        write_npy_chunks(
            tmp / "features.npy",
            (config.n_items, config.feature_dim),
            renderer.render_chunks(catalogue.latent, rng),
        )
        truth.save(tmp / "truth.npz")
        stats = marketplace_statistics(load_dataset(tmp, mmap=True))
        (tmp / "marketplace.json").write_text(
            json.dumps({"config": asdict(config), "statistics": stats}, indent=2) + "\n"
        )
        (tmp / "README.md").write_text(_readme(config, stats))
    return stats


def marketplace_statistics(dataset) -> dict[str, float]:
    from training.data.history import baskets

    table = baskets(dataset.purchases)
    per_user = table.groupby("user_id").size()
    sample = np.asarray(dataset.features[: min(dataset.n_items, 2_000)])
    sold_once = dataset.purchases["item"].nunique()
    return {
        "artworks": dataset.n_items,
        "artists": int(dataset.items["artist_id"].nunique()),
        "customers": int(per_user.size),
        "purchases": len(dataset.purchases),
        "baskets": len(table),
        "customers_with_2plus_baskets": int((per_user >= 2).sum()),
        "one_of_a_kind_share": round(float(dataset.items["one_of_a_kind"].mean()), 4),
        "distinct_artworks_sold": int(sold_once),
        "mean_basket_size": round(len(dataset.purchases) / len(table), 3),
        "feature_dim": int(dataset.features.shape[1]),
        "feature_zero_share": round(float((sample == 0).mean()), 3),
        "feature_mean": round(float(sample.mean()), 3),
    }


def _readme(config: MarketplaceConfig, stats: dict) -> str:
    rows = "\n".join(f"| {name} | {value} |" for name, value in stats.items())
    return f"""# Curator marketplace (simulated)

Generated by `curator data generate` (seed {config.seed}). Every artwork, artist, customer and
purchase here is simulated; `features.npy` imitates pooled ResNet-50 features of the artworks'
images. `truth.npz` holds the simulator's true preference scores (the evaluation's `ideal` row).
`marketplace.json` lists every knob. See training/data/marketplace.py for the generative story.

| statistic | value |
| --- | --- |
{rows}
"""
