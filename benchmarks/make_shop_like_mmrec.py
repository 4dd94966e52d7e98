"""A shop-like synthetic dataset in the MMRec layout, for trying what helps where the same
items sell to many customers (the held-out multimodal benchmark's regime, which is not here).

9,000 customers, 7,000 items in 200 categories: each customer has 1-3 tastes and buys 5-30
distinct items, chosen by softmax(0.25 x taste . item + popularity), popularity ~ N(0, 1.6);
with probability 0.04 the next item is a complement of the previous one. Features: 128-d, a
random projection of the 24-d item factors plus noise and a per-category offset, so they show
the factors only in part. The last item of each customer is the test, the one before the
validation (x_label 2 / 1). Writes OUT/shop.inter and OUT/image_feat.npy; import with
`curator data import-mmrec --dir OUT --out DATA`.

    python benchmarks/make_shop_like_mmrec.py OUT [--seed 0] [--feature-noise 2.0]

On seed 0 the validation split gives popular R@20 .079, EASE .109, item-kNN .046, VisRank
.021-.027 (`curator evaluate --protocol holdout --split valid`): popularity and co-purchases
lead, as on the public benchmark (MostPop .060, EASE .088 there).
"""

import argparse
from pathlib import Path

import numpy as np

USERS, ITEMS, FACTORS, CATEGORIES, FEATURES = 9_000, 7_000, 24, 200, 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--feature-noise",
        type=float,
        default=2.0,
        help="standard deviation of the noise added to the features (higher: the features "
        "show the item factors less, and co-purchases carry more of the signal)",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    centres = rng.normal(size=(CATEGORIES, FACTORS))
    category = rng.integers(0, CATEGORIES, ITEMS)
    factors = centres[category] * 0.8 + rng.normal(size=(ITEMS, FACTORS)) * 0.6
    popularity = rng.normal(size=ITEMS) * 1.6
    same_category = [
        rng.choice(np.flatnonzero(category == category[i]), 3)
        if (category == category[i]).sum() > 3
        else rng.choice(ITEMS, 3)
        for i in range(ITEMS)
    ]
    complements = np.concatenate([np.array(same_category), rng.integers(0, ITEMS, (ITEMS, 2))], 1)
    rows, time = [], 1_600_000_000
    for user in range(USERS):
        n_tastes = rng.integers(1, 4)
        tastes = (
            centres[rng.choice(CATEGORIES, n_tastes)] + rng.normal(size=(n_tastes, FACTORS)) * 0.5
        )
        wanted = 5 + min(rng.geometric(0.25) - 1, 25)
        bought, previous = [], None
        while len(bought) < wanted:
            if previous is not None and rng.random() < 0.04:
                item = int(rng.choice(complements[previous]))
            else:
                logits = 0.25 * (factors @ tastes[rng.integers(n_tastes)]) + popularity
                chances = np.exp(logits - logits.max())
                item = int(rng.choice(ITEMS, p=chances / chances.sum()))
            if item not in bought:
                bought.append(item)
                previous = item
        for position, item in enumerate(bought):
            label = 2 if position == len(bought) - 1 else 1 if position == len(bought) - 2 else 0
            rows.append(f"{user}\t{item}\t5\t{time + position}\t{label}\n")
        time += 100
    projection = rng.normal(size=(FACTORS, FEATURES)) / np.sqrt(FACTORS)
    features = (
        factors @ projection
        + rng.normal(size=(ITEMS, FEATURES)) * args.feature_noise
        + 0.3 * rng.normal(size=(CATEGORIES, FEATURES))[category]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "image_feat.npy", features.astype(np.float32))
    with open(args.out / "shop.inter", "w") as inter:
        inter.write("userID\titemID\trating\ttimestamp\tx_label\n")
        inter.writelines(rows)
    print(f"wrote {args.out}: {len(rows):,} interactions of {USERS:,} customers")


if __name__ == "__main__":
    main()
