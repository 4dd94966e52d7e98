"""MovieLens-100K in the MMRec layout: real co-consumption data that nobody here made, for
checking choices in the held-out multimodal benchmark's regime (the same items chosen by many
people, one test item per user), which is not here.

Reads GroupLens' own files (`u.data`, `u.item`) or RecBole's atomic copy of them
(`ml-100k.inter`, `ml-100k.item`, shipped in the `recbole` wheel under
`recbole/dataset_example/ml-100k/`). Ratings of 4 and 5 count as interactions (the usual
implicit-feedback cut); users with fewer than three are dropped. Each user's last interaction
in time is the test, the one before it the validation (x_label 2 / 1), as in the benchmark.

Movies have no pictures here, so `image_feat.npy` holds stand-in features: the genres and the
release decade (multi-hot), randomly projected to 128 dimensions, plus Gaussian noise. Like
UGallery's stand-ins, they say what kind of item it is and nothing of its look, so the
co-consumption signal carries most of the weight, as it does on the benchmark.

    python benchmarks/make_movielens_mmrec.py SOURCE_DIR OUT [--seed 0] [--feature-noise 0.5]

then `curator data import-mmrec --dir OUT --out DATA`.
"""

import argparse
import csv
import re
from pathlib import Path

import numpy as np

FEATURES = 128
GROUPLENS_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def read_grouplens(source: Path) -> tuple[list[tuple[str, str, float, int]], dict]:
    """Ratings (user, item, rating, time) and each item's tags from `u.data` and `u.item`."""
    ratings = []
    with open(source / "u.data", encoding="ascii") as data:
        for line_number, line in enumerate(data, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 4:
                raise SystemExit(f"{source / 'u.data'}:{line_number}: expected 4 tab fields")
            ratings.append(_rating(source / "u.data", line_number, *fields))
    tags = {}
    with open(source / "u.item", encoding="latin-1") as items:
        for line in items:
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("|")
            # The year in the title (what RecBole's release_year holds), else the release date's.
            title_year = re.search(r"\((\d{4})\)\s*$", fields[1])
            year = title_year.group(1) if title_year else fields[2][-4:]
            flags = fields[-len(GROUPLENS_GENRES) :]
            genres = [g for g, flag in zip(GROUPLENS_GENRES, flags, strict=True) if flag == "1"]
            tags[fields[0]] = genres + _decade(year)
    return ratings, tags


def read_recbole(source: Path) -> tuple[list[tuple[str, str, float, int]], dict]:
    """The same from RecBole's atomic files (tab separated, typed header)."""
    ratings = []
    with open(source / "ml-100k.inter", encoding="utf-8") as data:
        rows = csv.DictReader(data, delimiter="\t")
        columns = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
        missing = [c for c in columns if c not in (rows.fieldnames or [])]
        if missing:
            raise SystemExit(f"{source / 'ml-100k.inter'}:1: no column {', '.join(missing)}")
        for row in rows:
            values = [row[c] or "" for c in columns]
            ratings.append(_rating(source / "ml-100k.inter", rows.line_num, *values))
    tags = {}
    with open(source / "ml-100k.item", encoding="utf-8") as items:
        for row in csv.DictReader(items, delimiter="\t", quoting=csv.QUOTE_NONE):
            genres = (row["class:token_seq"] or "").split()
            tags[row["item_id:token"]] = genres + _decade(row["release_year:token"] or "")
    return ratings, tags


def _rating(path: Path, line: int, user: str, item: str, rating: str, time: str):
    """(user, item, rating, time) of one row, or an exit naming the file, line and field."""
    for name, value in (("user", user), ("item", item), ("time", time)):
        if not re.fullmatch(r"[0-9]+(\.0*)?", value.strip()):
            raise SystemExit(f"{path}:{line}: {name} {value!r} is not a whole number")
    try:
        score = float(rating)
    except ValueError:
        score = float("nan")
    if not 0 <= score <= 5:
        raise SystemExit(f"{path}:{line}: rating {rating!r} is not a number in 0-5")
    return user.strip(), item.strip(), score, int(float(time))


def _decade(year: str) -> list[str]:
    return [f"decade:{year[:3]}"] if len(year) == 4 and year.isdigit() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with u.data/u.item or ml-100k.*")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feature-noise", type=float, default=0.5)
    args = parser.parse_args()
    if (args.source / "u.data").exists():
        ratings, tags = read_grouplens(args.source)
    elif (args.source / "ml-100k.inter").exists():
        ratings, tags = read_recbole(args.source)
    else:
        raise SystemExit(f"{args.source}: neither u.data nor ml-100k.inter is there")

    liked: dict[str, list[tuple[int, str]]] = {}
    for user, item, rating, time in ratings:
        if rating >= 4:
            liked.setdefault(user, []).append((time, item))
    users = sorted((u for u, rows in liked.items() if len(rows) >= 3), key=int)
    items = sorted({item for u in users for _, item in liked[u]}, key=int)
    item_index = {item: index for index, item in enumerate(items)}

    rows = []
    for user_index, user in enumerate(users):
        history = sorted(liked[user], key=lambda row: (row[0], int(row[1])))
        for position, (time, item) in enumerate(history):
            label = 2 if position == len(history) - 1 else 1 if position == len(history) - 2 else 0
            rows.append(f"{user_index}\t{item_index[item]}\t1\t{time}\t{label}\n")

    vocabulary = sorted({tag for item in items for tag in tags.get(item, [])})
    tag_index = {tag: index for index, tag in enumerate(vocabulary)}
    multi_hot = np.zeros((len(items), len(vocabulary)))
    for row, item in enumerate(items):
        for tag in tags.get(item, []):
            multi_hot[row, tag_index[tag]] = 1.0
    rng = np.random.default_rng(args.seed)
    projection = rng.normal(size=(len(vocabulary), FEATURES))
    features = multi_hot @ projection + rng.normal(size=(len(items), FEATURES)) * args.feature_noise
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "image_feat.npy", features.astype(np.float32))
    with open(args.out / "ml100k.inter", "w", encoding="utf-8") as inter:
        inter.write("userID\titemID\trating\ttimestamp\tx_label\n")
        inter.writelines(rows)
    print(
        f"wrote {args.out}: {len(rows):,} interactions of {len(users):,} users, "
        f"{len(items):,} items, {len(vocabulary)} feature tags"
    )


if __name__ == "__main__":
    main()
