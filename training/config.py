"""The training job's configuration: one frozen dataclass, loaded from YAML or TOML."""

from __future__ import annotations

import math
import numbers
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from towers.user_tower import POOLINGS
from training.sampling import POLICIES

CONFIG_DIR = Path(__file__).parent / "configs"
LOSSES = ("softmax", "bpr")
# the profile terms' weight grids (training/calibration.py)
TERM_GRIDS = (
    "nearest_purchase_weights",
    "profile_mean_weights",
    "popularity_weights",
    "copurchase_weights",
    "ease_weights",
    "freshness_weights",
    "era_weights",
)
SELECTION_METRICS = ("auc", "r@20", "r@100", "ndcg@20", "mean_recall", "auc_recall")
ACTIVATIONS = (
    "selu", "relu", "relu6", "elu", "gelu", "silu", "swish", "mish", "leaky_relu", "tanh",
    "sigmoid", "hard_sigmoid", "softplus", "softsign", "exponential", "linear",
)  # fmt: skip
TYPE_WORDS = {
    "int": "an integer",
    "float": "a finite number",
    "bool": "true or false",
    "str": "a string",
}


def _has_type(value, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if kind == "int":
        return isinstance(value, numbers.Integral)
    return math.isfinite(value)


@dataclass(frozen=True)
class TrainConfig:
    # towers
    item_hidden: tuple[int, ...] = (200, 200)
    user_hidden: tuple[int, ...] = (300, 300, 200)
    activation: str = "selu"
    pooling: str = "avg_max"
    dropout: float = 0.0
    l2_normalize: bool = True
    hybrid: bool = False
    bias_head: bool = False  # a learned visual "appeal" added to every score
    artist_embedding: bool = False  # known artists: a learned embedding and bias
    # after training: artist biases += w x the artist's centred log sell-through rate, with w
    # the one of these weights that scores best on the validation (none: no prior)
    artist_prior_weights: tuple[float, ...] = ()
    # after training: scores += w x the candidate's cosine to the closest profile artwork (on
    # `nearest_purchase_dim` principal components of the features), w the one of these weights
    # that scores best on the validation (none: no such term); training/nearest_purchase.py
    nearest_purchase_weights: tuple[float, ...] = ()
    nearest_purchase_dim: int = 128
    # the profile's mean look (VisRank-mean's view) and past sales: + w x the candidate's mean
    # cosine to the profile's artworks, + w x log(1 + its sales); every combination of the three
    # grids is tried and the best by `calibration_metric` kept; training/nearest_purchase.py
    profile_mean_weights: tuple[float, ...] = ()
    popularity_weights: tuple[float, ...] = ()
    # what customers who bought the profile's artworks also bought (training/copurchase.py):
    # + w x the normalised item-kNN score, chosen with the popularity weight once the three
    # profile terms are (training/calibration.py)
    copurchase_weights: tuple[float, ...] = ()
    # the same over EASE^R's weights (negative where an artwork is bought instead of another),
    # + w x its normalised score, chosen after the co-purchase weight (training/copurchase.py)
    ease_weights: tuple[float, ...] = ()
    # freshness (training/nearest_purchase.py): + w x exp(-the artwork's age / tau), every w of
    # `freshness_weights` at every tau (days) of `freshness_days`, chosen by `selection_metric`
    # after the others (training/calibration.py)
    freshness_weights: tuple[float, ...] = ()
    freshness_days: tuple[float, ...] = (30.0, 90.0, 365.0)
    # the era term (training/nearest_purchase.py): + w x exp(-days from the artwork's upload to
    # the closest upload day of the profile's artworks / tau), chosen like freshness, in its
    # place where the validation tests have no times
    era_weights: tuple[float, ...] = ()
    era_days: tuple[float, ...] = (30.0, 90.0, 365.0)
    calibration_metric: str = "auc_recall"
    # objective
    loss: str = "softmax"  # softmax: TFRS Retrieval, in-batch negatives; bpr: the paper's triples
    temperature: float = 0.05
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    weight_decay: float = 0.0
    # examples: policy -> anchors per epoch (`history` always takes every basket)
    policies: tuple[tuple[str, int], ...] = (("history", 1), ("one_item", 2000))
    hard_negatives: bool = False  # softmax: add each example's policy negative to the batch
    uniform_negatives: int = 0  # softmax: catalogue artworks drawn uniformly, per batch
    in_cluster: float = 0.6
    n_clusters: int = 100
    max_profile: int = 50
    # optimisation
    batch_size: int = 256
    learning_rate: float = 1e-3
    lr_decay: float = 1.0  # learning rate multiplier per epoch
    epochs: int = 30
    patience: int = 5
    selection_metric: str = "auc"
    seed: int = 0
    # export: the index's k, its kind and ScaNN parameters
    export_k: int = 100
    scann_min_items: int = 20_000
    scann_leaves_to_search_share: float = 0.05
    scann_dimensions_per_block: int = 2
    scann_reorder: int = 200

    @property
    def bias_slot(self) -> bool:
        """Item vectors end with an additive prior (a learned bias), user vectors with a 1."""
        return self.hybrid or self.bias_head or self.artist_embedding

    def __post_init__(self) -> None:
        self._check_types()
        pairs = self.policies.items() if isinstance(self.policies, dict) else self.policies
        object.__setattr__(self, "policies", tuple((str(k), int(v)) for k, v in pairs))
        object.__setattr__(self, "item_hidden", tuple(int(u) for u in self.item_hidden))
        object.__setattr__(self, "user_hidden", tuple(int(u) for u in self.user_hidden))
        for name in TERM_GRIDS + ("artist_prior_weights", "freshness_days", "era_days"):
            object.__setattr__(self, name, tuple(float(w) for w in getattr(self, name)))
        checks = {
            "loss": (self.loss in LOSSES, f"one of {LOSSES}"),
            "pooling": (self.pooling in POOLINGS, f"one of {POOLINGS}"),
            "selection_metric": (
                self.selection_metric in SELECTION_METRICS,
                f"one of {SELECTION_METRICS}",
            ),
            "policies": (
                set(self.policy_counts) <= set(POLICIES)
                and all(n >= 0 for n in self.policy_counts.values()),
                f"names from {POLICIES} with counts >= 0",
            ),
            "activation": (self.activation in ACTIVATIONS, f"one of {ACTIVATIONS}"),
            "item_hidden": (
                bool(self.item_hidden) and all(u >= 1 for u in self.item_hidden),
                "a non-empty list of units >= 1",
            ),
            "user_hidden": (
                bool(self.user_hidden) and all(u >= 1 for u in self.user_hidden),
                "a non-empty list of units >= 1",
            ),
            "temperature": (self.temperature > 0, "> 0"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "batch_size": (self.batch_size >= 2, ">= 2"),
            "learning_rate": (self.learning_rate > 0, "> 0"),
            "lr_decay": (self.lr_decay > 0, "> 0"),
            "epochs": (self.epochs >= 1, ">= 1"),
            "patience": (self.patience >= 1, ">= 1"),
            "n_clusters": (self.n_clusters >= 1, ">= 1"),
            "seed": (0 <= self.seed < 2**32, "in [0, 2**32)"),
            "scann_min_items": (self.scann_min_items >= 1, ">= 1"),
            "scann_dimensions_per_block": (self.scann_dimensions_per_block >= 1, ">= 1"),
            "scann_reorder": (self.scann_reorder >= 1, ">= 1"),
            "max_profile": (self.max_profile >= 1, ">= 1"),
            "in_cluster": (0.0 <= self.in_cluster <= 1.0, "in [0, 1]"),
            "dropout": (0.0 <= self.dropout < 1.0, "in [0, 1)"),
            "export_k": (self.export_k >= 1, ">= 1"),
            "uniform_negatives": (self.uniform_negatives >= 0, ">= 0"),
            **{
                name: (
                    all(math.isfinite(w) and w >= 0 for w in getattr(self, name)),
                    "finite weights >= 0",
                )
                for name in TERM_GRIDS
            },
            "calibration_metric": (
                self.calibration_metric in SELECTION_METRICS,
                f"one of {SELECTION_METRICS}",
            ),
            **{
                name: (
                    all(math.isfinite(d) and d > 0 for d in getattr(self, name)),
                    "finite days > 0",
                )
                for name in ("freshness_days", "era_days")
            },
            "nearest_purchase_dim": (self.nearest_purchase_dim >= 1, ">= 1"),
            "scann_leaves_to_search_share": (
                0.0 < self.scann_leaves_to_search_share <= 1.0,
                "in (0, 1]",
            ),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(
                    f"config field {name!r} must be {expected}, got {getattr(self, name)!r}"
                )
        if self.item_hidden[-1] != self.user_hidden[-1]:  # scores are their dot products
            raise ValueError(
                f"config: item_hidden ends in {self.item_hidden[-1]} units and user_hidden in "
                f"{self.user_hidden[-1]}: both towers must end in the same width"
            )
        if (self.hybrid or self.artist_embedding) and self.loss == "bpr":
            raise ValueError(
                "config: hybrid and artist_embedding towers are trained with the softmax loss only"
            )
        if self.artist_prior_weights and not self.artist_embedding:
            raise ValueError("config: artist_prior_weights needs artist_embedding: true")
        if self.loss == "bpr" and not self.policies:
            raise ValueError("config: the bpr loss needs at least one sampling policy")

    def _check_types(self) -> None:
        """Each field's type as declared, before any conversion: an integer field takes no bool
        or 2.5 (once `epochs: true` trained one epoch and `batch_size: 2.5` failed deep in
        sampling), a number field only finite numbers (once `learning_rate: .inf` failed after
        an epoch), a flag only true/false; in lists, each element."""
        for field in fields(self):
            value, kind = getattr(self, field.name), field.type
            if kind.startswith("tuple[tuple"):
                self._check_policies()
                continue
            element = kind.removeprefix("tuple[").removesuffix(", ...]")
            is_list = kind.startswith("tuple[")
            if is_list and not isinstance(value, list | tuple):
                raise ValueError(
                    f"config field {field.name!r} must be a list, each element "
                    f"{TYPE_WORDS[element]}, got {value!r}"
                )
            where = " element" if is_list else ""
            for one in value if is_list else (value,):
                if not _has_type(one, element):
                    raise ValueError(
                        f"config field {field.name!r}{where} must be {TYPE_WORDS[element]}, "
                        f"got {one!r}"
                    )

    def _check_policies(self) -> None:
        """`policies`: a mapping of policy names to counts, or a list of [name, count] pairs
        (a config's own `to_dict` and older files); each count an integer."""
        value = self.policies
        pairs = list(value.items()) if isinstance(value, dict) else value
        expected = "a mapping of policy names to integer counts, e.g. {history: 1, one_item: 2000}"
        if not isinstance(pairs, list | tuple) or not all(
            isinstance(pair, list | tuple) and len(pair) == 2 for pair in pairs
        ):
            raise ValueError(f"config field 'policies' must be {expected}, got {value!r}")
        for name, count in pairs:
            if not isinstance(name, str) or not _has_type(count, "int"):
                raise ValueError(
                    f"config field 'policies' must be {expected}, got {name!r}: {count!r}"
                )

    @property
    def policy_counts(self) -> dict[str, int]:
        return dict(self.policies)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["policies"] = self.policy_counts
        values["item_hidden"], values["user_hidden"] = (
            list(self.item_hidden),
            list(self.user_hidden),
        )
        values["artist_prior_weights"] = list(self.artist_prior_weights)
        values["freshness_days"] = list(self.freshness_days)
        values["era_days"] = list(self.era_days)
        for name in TERM_GRIDS:
            values[name] = list(getattr(self, name))
        return values


def load_config(source: str | Path | None) -> TrainConfig:
    """A config from a YAML/TOML file, or a preset name in training/configs (None: `curator`)."""
    path = Path(source) if source is not None else CONFIG_DIR / "curator.yaml"
    if source is not None and not path.exists() and (CONFIG_DIR / f"{source}.yaml").exists():
        path = CONFIG_DIR / f"{source}.yaml"
    if not path.exists():
        presets = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ValueError(f"config {source!r}: no such file, and not a preset ({presets})")
    if not path.is_file():  # a directory; a named pipe would block the read for good
        raise ValueError(f"config {source}: not a regular file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path.name}: not UTF-8 text (byte {error.start})") from None
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path.name}: not valid {path.suffix[1:].upper()}: {error}") from None
    if not isinstance(values, dict) or not values:  # an empty YAML is None, an empty TOML {}
        raise ValueError(
            f"{path.name}: expected a mapping of config fields (for the defaults, give no "
            "--config or a preset's name)"
        )
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(map(str, set(values) - known))
    if unknown:
        raise ValueError(f"{path.name}: unknown config field(s) {unknown}")
    try:
        return TrainConfig(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path.name}: {error}") from None
