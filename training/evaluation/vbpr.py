"""VBPR (He & McAuley, AAAI 2016), the visual baseline of the CuratorNet paper's Table 2.

    score(u, i) = beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i

f_i are the artwork's z-scored features divided by sqrt(d) (so |f_i| is about 1; E and beta'
absorb the scale). Fitted with BPR on `training_split(dataset)[0]` (training/evaluation/splits.py):
each distinct (customer, artwork) purchase is a positive against an artwork drawn uniformly
among those the customer did not buy, minibatch Adam, L2 on every parameter a triple touches
and on E and beta'. Only artworks bought in those purchases get beta_i and gamma_i; the others
keep 0 and are scored by their visual part alone (VBPR's point for cold artworks). Customers
are keyed by user_id; one not seen in the fit purchases gets zero gamma_u and theta_u.

The number of epochs is chosen on the validation tests of `training_split`: every `eval_every`
epochs the model is scored (R@20), the best is kept, and training stops after `patience`
evaluations without improvement. `chosen` and `validation` on the result record it. Without
validation tests it trains `max_epochs` and `chosen["validation_r@20"]` is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from training.data.features import zscore
from training.evaluation.interface import QueryBatch
from training.evaluation.learned_baselines import validation_recall
from training.evaluation.protocols import Case


@dataclass(frozen=True)
class VBPRConfig:
    factors: int = 20  # K, latent
    visual_factors: int = 20  # K', rows of E
    learning_rate: float = 0.002  # Adam
    reg: float = 1e-2  # L2 on beta_i, gamma_u, gamma_i, theta_u of each triple
    visual_reg: float = 1e-4  # L2 on E and beta', once per batch
    batch_size: int = 256
    max_epochs: int = 200
    eval_every: int = 2
    patience: int = 5  # evaluations without improvement before stopping
    seed: int = 0

    def __post_init__(self):
        for name in (
            "factors",
            "visual_factors",
            "batch_size",
            "max_epochs",
            "eval_every",
            "patience",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.reg < 0 or self.visual_reg < 0:
            raise ValueError("learning_rate must be positive and reg, visual_reg non-negative")


class VBPR:
    """A trained VBPR as a Recommender: score = user_vectors[u] . item_vectors[i] + bias[i]."""

    name = "vbpr"

    def __init__(
        self,
        user_ids: np.ndarray,
        user_vectors: np.ndarray,
        item_vectors: np.ndarray,
        item_bias: np.ndarray,
    ):
        self.user_row = {str(user): row for row, user in enumerate(user_ids)}
        self.user_vectors = user_vectors  # [n_users, K + K'] (gamma_u, theta_u)
        self.item_vectors = item_vectors  # [n_items, K + K'] (gamma_i, E f_i)
        self.item_bias = item_bias  # [n_items] beta_i + beta' . f_i
        self.chosen: dict = {}
        self.validation: dict = {}

    def score(self, batch: QueryBatch, candidates: np.ndarray) -> np.ndarray:
        rows = [self.user_row.get(str(user)) for user in batch.user_ids]
        users = np.zeros((len(rows), self.user_vectors.shape[1]), dtype=self.user_vectors.dtype)
        for position, row in enumerate(rows):
            if row is not None:  # unknown customers keep zeros
                users[position] = self.user_vectors[row]
        # [B, K + K'] @ [K + K', n_candidates] + [n_candidates]
        return users @ self.item_vectors[candidates].T + self.item_bias[candidates]


class _Adam:
    """Adam over a dict of dense arrays, updated in place."""

    def __init__(self, params: dict[str, np.ndarray], learning_rate: float):
        self.rate, self.step = learning_rate, 0
        self.first = {name: np.zeros_like(value) for name, value in params.items()}
        self.second = {name: np.zeros_like(value) for name, value in params.items()}

    def apply(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.step += 1
        correction = np.sqrt(1 - 0.999**self.step) / (1 - 0.9**self.step)
        for name, grad in grads.items():
            self.first[name] = 0.9 * self.first[name] + 0.1 * grad
            self.second[name] = 0.999 * self.second[name] + 0.001 * np.square(grad)
            step = self.rate * correction * self.first[name] / (np.sqrt(self.second[name]) + 1e-8)
            params[name] -= step


def fit_vbpr(
    features: np.ndarray,
    purchases: pd.DataFrame,
    cases: Sequence[Case],
    config: VBPRConfig | None = None,
) -> VBPR:
    """VBPR on `purchases` (user_id, item), the epoch chosen on the validation `cases`."""
    config = config or VBPRConfig()
    n_items, dim = features.shape
    visual = zscore(features) / np.float32(np.sqrt(dim))  # [n_items, d]
    pairs = purchases[["user_id", "item"]].drop_duplicates()
    users, user_ids = pd.factorize(pairs["user_id"])
    items = pairs["item"].to_numpy(dtype=np.int64)
    fitted = np.unique(items)
    slot = np.full(n_items, fitted.size)  # row of beta_i, gamma_i; row fitted.size stays 0
    slot[fitted] = np.arange(fitted.size)
    bought = np.sort(users.astype(np.int64) * n_items + items)  # (customer, artwork) keys
    rng = np.random.default_rng(config.seed)
    k, k_visual = config.factors, config.visual_factors
    params = {
        "gamma_user": rng.normal(0, 0.1, (user_ids.size, k)),
        "theta_user": rng.normal(0, 0.1, (user_ids.size, k_visual)),
        "gamma_item": np.vstack([rng.normal(0, 0.1, (fitted.size, k)), np.zeros((1, k))]),
        "beta_item": np.zeros(fitted.size + 1),
        "projection": rng.normal(0, 0.1, (dim, k_visual)),  # E^T [d, K']
        "beta_visual": np.zeros(dim),
    }
    params = {name: value.astype(np.float32) for name, value in params.items()}
    adam = _Adam(params, config.learning_rate)

    def snapshot() -> VBPR:
        item_vectors = np.hstack([params["gamma_item"][slot], visual @ params["projection"]])
        bias = params["beta_item"][slot] + visual @ params["beta_visual"]  # [n_items]
        user_vectors = np.hstack([params["gamma_user"], params["theta_user"]])
        return VBPR(np.asarray(user_ids), user_vectors, item_vectors, bias)

    best, best_recall, history, since_best = None, -np.inf, {}, 0
    for epoch in range(1, config.max_epochs + 1):
        order = rng.permutation(items.size)
        negatives = _negatives(rng, users[order], bought, n_items)  # [n_pairs], in `order`
        for start in range(0, items.size, config.batch_size):
            batch = order[start : start + config.batch_size]
            triples = users[batch], items[batch], negatives[start : start + config.batch_size]
            adam.apply(params, _gradients(params, *triples, slot, visual, config))
        if not cases or (epoch % config.eval_every and epoch < config.max_epochs):
            continue
        model = snapshot()
        history[epoch] = validation_recall(model, cases, n_items)
        if history[epoch] > best_recall:
            best, best_recall, since_best = model, history[epoch], 0
            best.chosen = {"epochs": epoch, "validation_r@20": best_recall}
        else:
            since_best += 1
            if since_best >= config.patience:
                break
    if best is None:  # no validation tests: the last epoch
        best = snapshot()
        best.chosen = {"epochs": config.max_epochs, "validation_r@20": None}
    best.validation = history
    return best


def _negatives(
    rng: np.random.Generator, users: np.ndarray, bought: np.ndarray, n_items: int
) -> np.ndarray:
    """[n] artworks drawn uniformly, redrawn while the customer bought them."""
    draws = rng.integers(n_items, size=users.size)
    for _ in range(100):
        keys = users.astype(np.int64) * n_items + draws
        found = np.minimum(np.searchsorted(bought, keys), bought.size - 1)
        clash = bought[found] == keys
        if not clash.any():
            break
        draws[clash] = rng.integers(n_items, size=int(clash.sum()))
    return draws


def _gradients(
    params: dict[str, np.ndarray],
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    slot: np.ndarray,
    visual: np.ndarray,
    config: VBPRConfig,
) -> dict[str, np.ndarray]:
    """Gradients of mean(-log sigmoid(score(u, i) - score(u, j))) + L2 over b triples."""
    n = users.size
    pos, neg = slot[positives], slot[negatives]  # [b] rows of gamma_item, beta_item
    gamma_user, theta_user = params["gamma_user"][users], params["theta_user"][users]  # [b, K]
    gamma_pos, gamma_neg = params["gamma_item"][pos], params["gamma_item"][neg]  # [b, K]
    beta_pos, beta_neg = params["beta_item"][pos], params["beta_item"][neg]  # [b]
    visual_diff = visual[positives] - visual[negatives]  # [b, d]
    projected = visual_diff @ params["projection"]  # [b, K']
    margin = (
        beta_pos
        - beta_neg
        + np.einsum("bk,bk->b", gamma_user, gamma_pos - gamma_neg)
        + np.einsum("bk,bk->b", theta_user, projected)
        + visual_diff @ params["beta_visual"]
    )  # [b]
    weight = (-expit(-margin) / n)[:, None]  # [b, 1] d loss / d margin
    reg = config.reg / n
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    np.add.at(grads["gamma_user"], users, weight * (gamma_pos - gamma_neg) + reg * gamma_user)
    np.add.at(grads["theta_user"], users, weight * projected + reg * theta_user)
    np.add.at(grads["gamma_item"], pos, weight * gamma_user + reg * gamma_pos)
    np.add.at(grads["gamma_item"], neg, -weight * gamma_user + reg * gamma_neg)
    np.add.at(grads["beta_item"], pos, weight[:, 0] + reg * beta_pos)
    np.add.at(grads["beta_item"], neg, -weight[:, 0] + reg * beta_neg)
    grads["gamma_item"][-1] = 0.0  # artworks never bought keep gamma_i = 0, beta_i = 0
    grads["beta_item"][-1] = 0.0
    grads["projection"] = (
        visual_diff.T @ (weight * theta_user) + config.visual_reg * params["projection"]
    )  # [d, K']
    grads["beta_visual"] = visual_diff.T @ weight[:, 0] + config.visual_reg * params["beta_visual"]
    return grads
