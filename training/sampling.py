"""Training examples: (profile, positive[, negative]) from purchase histories.

One mechanism, six policies (the CuratorNet paper's sampling guidelines). A policy proposes
anchors, a profile and a positive artwork, and names the rule its negative must obey; one shared
sampler draws every negative, from the positive's visual cluster with probability
`in_cluster` (the paper's "fine-grained threshold", 0.6) and uniformly otherwise, rejecting
candidates that break the rule or that the customer owns.

Policies (guideline number in the paper), anchor -> negative rule:

- history (5), next basket given the past: profile = purchases before a basket, positive = an
  artwork of it -> shares neither artist nor cluster with the profile.
- profile (1), profile above non-profile: profile = a customer's purchases, positive = one of
  them -> not owned.
- one_item (2), one-item fake profile: profile = {i}, positive = i -> not i.
- artist_cluster (3), unbought same artist and cluster: profile = purchases, positive = an
  unbought artwork of a profile artist in the same cluster -> shares neither artist nor cluster
  with the profile.
- same_artist (4), one item, same artist above other artists: profile = {i}, positive = same
  artist and cluster as i -> same cluster, other artist.
- basket (6), hidden item of a basket: profile = the basket without i, positive = i -> not owned.
- leave_one_out (no guideline; the usual way a history-pooling tower learns from unordered
  data): profile = a customer's other artworks, positive = the one held out -> not owned.

`history` anchors are every (basket after a customer's first, artwork) pair and `leave_one_out`
anchors every (customer with two or more artworks, artwork) pair, in a fresh order each epoch;
the other policies draw as many anchors as the configuration asks, afresh each epoch.
Purchases without timestamps are one unordered basket per customer: `history` then has no
anchors, and `leave_one_out` is what learns from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.data.history import baskets

POLICIES = (
    "history",
    "profile",
    "one_item",
    "artist_cluster",
    "same_artist",
    "basket",
    "leave_one_out",
)
NEGATIVE_TRIES = 20


@dataclass(frozen=True)
class Examples:
    """n examples; rows are catalogue rows. negative -1: none drawn."""

    profiles: list[np.ndarray]
    positives: np.ndarray  # [n]
    negatives: np.ndarray  # [n]
    owned: list[np.ndarray]  # what each example's customer bought: never a negative
    policies: np.ndarray  # [n] policy name of each example

    def __len__(self) -> int:
        return len(self.positives)


@dataclass(frozen=True)
class SamplingContext:
    """What the policies know: customers' baskets, artists and visual clusters."""

    user_baskets: dict[str, list[np.ndarray]]  # time order
    artists: np.ndarray  # [n_items] artist code, -1 unknown
    clusters: np.ndarray  # [n_items] visual cluster
    max_profile: int

    @classmethod
    def build(cls, purchases: pd.DataFrame, artists, clusters, max_profile: int):
        """Baskets in time order; untimed purchases: one basket of each customer's artworks."""
        user_baskets: dict[str, list[np.ndarray]] = {}
        if np.isfinite(purchases["timestamp"].to_numpy()).all():
            table = baskets(purchases)[["user_id", "items"]].to_numpy()
        else:
            grouped = purchases.groupby("user_id", sort=True)["item"]
            table = [(user, _distinct(rows.to_numpy(np.int64))) for user, rows in grouped]
        for user, items in table:
            user_baskets.setdefault(user, []).append(items)
        return cls(user_baskets, np.asarray(artists), np.asarray(clusters), max_profile)

    @property
    def n_items(self) -> int:
        return self.artists.size

    def cluster_members(self) -> list[np.ndarray]:
        order = np.argsort(self.clusters, kind="stable")
        bounds = np.searchsorted(self.clusters[order], np.arange(self.clusters.max() + 2))
        return [order[bounds[c] : bounds[c + 1]] for c in range(self.clusters.max() + 1)]


def _distinct(rows: np.ndarray) -> np.ndarray:
    """Unique rows in first-seen order."""
    _, first = np.unique(rows, return_index=True)
    return rows[np.sort(first)]


class _Anchors:
    def __init__(self):
        self.profiles, self.positives, self.owned, self.rules = [], [], [], []

    def add(self, profile, positive, owned, rule):
        self.profiles.append(profile)
        self.positives.append(int(positive))
        self.owned.append(owned)
        self.rules.append(rule)


def _policy_history(ctx, rng, count, out: _Anchors, owned_of):
    for user, user_baskets in ctx.user_baskets.items():
        for number in range(1, len(user_baskets)):
            profile = _distinct(np.concatenate(user_baskets[:number]))
            for positive in user_baskets[number]:
                out.add(profile, positive, owned_of[user], "unrelated")


def _policy_profile(ctx, rng, count, out, owned_of):
    users = [u for u in ctx.user_baskets if owned_of[u].size >= 2]
    for user in rng.choice(users, count) if users else []:
        out.add(owned_of[user], rng.choice(owned_of[user]), owned_of[user], "not_owned")


def _policy_one_item(ctx, rng, count, out, owned_of):
    for item in rng.integers(0, ctx.n_items, count):
        out.add(np.array([item]), item, np.array([item]), "not_owned")


def _policy_artist_cluster(ctx, rng, count, out, owned_of):
    pair = ctx.artists * (int(ctx.clusters.max()) + 1) + ctx.clusters  # [n_items] artist+cluster
    for user in rng.choice(list(ctx.user_baskets), count):
        owned = owned_of[user]
        related = np.flatnonzero(np.isin(pair, pair[owned]) & (ctx.artists >= 0))
        related = np.setdiff1d(related, owned)
        if related.size:
            out.add(owned, rng.choice(related), owned, "unrelated")


def _policy_same_artist(ctx, rng, count, out, owned_of):
    for item in rng.integers(0, ctx.n_items, count):
        if ctx.artists[item] < 0:
            continue
        peers = np.flatnonzero(
            (ctx.artists == ctx.artists[item]) & (ctx.clusters == ctx.clusters[item])
        )
        peers = peers[peers != item]
        if peers.size:
            out.add(np.array([item]), rng.choice(peers), np.array([item]), "other_artist")


def _policy_basket(ctx, rng, count, out, owned_of):
    candidates = [
        (user, items)
        for user, user_baskets in ctx.user_baskets.items()
        for items in user_baskets
        if np.unique(items).size >= 2
    ]
    if not candidates:
        return
    for pick in rng.integers(0, len(candidates), count):
        user, items = candidates[pick]
        items = np.unique(items)
        hidden = rng.integers(0, items.size)
        out.add(np.delete(items, hidden), items[hidden], owned_of[user], "not_owned")


def _policy_leave_one_out(ctx, rng, count, out, owned_of):
    for owned in owned_of.values():
        if owned.size < 2:
            continue
        for position in rng.permutation(owned.size):
            others = np.delete(owned, position)
            # a random order, so that truncation to max_profile keeps a random subset
            out.add(others[rng.permutation(others.size)], owned[position], owned, "not_owned")


_POLICY_FUNCTIONS = {
    "history": _policy_history,
    "profile": _policy_profile,
    "one_item": _policy_one_item,
    "artist_cluster": _policy_artist_cluster,
    "same_artist": _policy_same_artist,
    "basket": _policy_basket,
    "leave_one_out": _policy_leave_one_out,
}


def _negative(ctx, rng, members, profile, positive, owned, rule, in_cluster) -> int:
    cluster = ctx.clusters[positive]
    profile_artists = set(ctx.artists[profile].tolist()) - {-1}
    profile_clusters = set(ctx.clusters[profile].tolist())
    for _ in range(NEGATIVE_TRIES):
        if rule == "other_artist" or rng.random() < in_cluster:
            candidate = int(rng.choice(members[cluster]))
        else:
            candidate = int(rng.integers(0, ctx.n_items))
        if candidate == positive or candidate in owned:
            continue
        if rule == "unrelated" and (
            ctx.artists[candidate] in profile_artists or ctx.clusters[candidate] in profile_clusters
        ):
            continue
        if rule == "other_artist" and ctx.artists[candidate] == ctx.artists[positive]:
            continue
        return candidate
    return -1


def sample_examples(
    ctx: SamplingContext,
    policy_counts: Mapping[str, int],
    *,
    seed: int,
    negatives: bool = True,
    in_cluster: float = 0.6,
) -> Examples:
    """Examples of every policy in `policy_counts` (name -> anchors; `history` takes all)."""
    unknown = set(policy_counts) - set(POLICIES)
    if unknown:
        raise ValueError(f"unknown sampling policies {sorted(unknown)}; choose from {POLICIES}")
    rng = np.random.default_rng(seed)
    owned_of = {u: np.unique(np.concatenate(b)) for u, b in ctx.user_baskets.items()}
    members = ctx.cluster_members() if negatives else []
    profiles, positives, negs, owned, names = [], [], [], [], []
    for name in POLICIES:
        if name not in policy_counts or policy_counts[name] <= 0:
            continue
        anchors = _Anchors()
        _POLICY_FUNCTIONS[name](ctx, rng, int(policy_counts[name]), anchors, owned_of)
        for profile, positive, own, rule in zip(
            anchors.profiles, anchors.positives, anchors.owned, anchors.rules, strict=True
        ):
            if profile.size > ctx.max_profile:  # keep the most recent artworks
                profile = profile[-ctx.max_profile :]
            profiles.append(profile)
            positives.append(positive)
            owned.append(own)
            names.append(name)
            negs.append(
                _negative(ctx, rng, members, profile, positive, set(own.tolist()), rule, in_cluster)
                if negatives
                else -1
            )
    return Examples(
        profiles, np.array(positives, np.int64), np.array(negs, np.int64), owned, np.array(names)
    )
