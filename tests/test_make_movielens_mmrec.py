"""benchmarks/make_movielens_mmrec.py on a hand-made MovieLens fixture, in both source layouts."""

import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "make_movielens_mmrec.py"

# (user, item, rating, time). User 7 likes 10, 11, 12 (in time order 11, 10, 12) and dislikes 13;
# user 8 likes 12, 14, 10; user 9 likes only two movies and is dropped.
RATINGS = [
    (7, 10, 4, 200),
    (7, 11, 5, 100),
    (7, 12, 4, 300),
    (7, 13, 2, 400),
    (8, 12, 5, 50),
    (8, 14, 4, 60),
    (8, 10, 5, 70),
    (9, 10, 5, 10),
    (9, 11, 5, 20),
]
MOVIES = {10: (1995, ["Comedy"]), 11: (1977, ["Action", "Sci-Fi"]), 12: (1995, ["Drama"])}
MOVIES |= {13: (1980, ["Horror"]), 14: (1999, ["Comedy", "Romance"])}
GENRES = "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy"
GENRES += " Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"


def write_grouplens(folder: Path) -> None:
    folder.mkdir()
    lines = [f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS]
    (folder / "u.data").write_text("".join(lines), encoding="ascii")
    rows = []
    for item, (year, genres) in MOVIES.items():
        flags = "|".join("1" if g in genres else "0" for g in GENRES.split())
        # A re-release: the date's year is not the title's, which is the film's (RecBole's).
        released = year + 20 if item == 11 else year
        rows.append(f"{item}|Film {item} ({year})|01-Jan-{released}||http://x|{flags}\n")
    (folder / "u.item").write_text("".join(rows), encoding="latin-1")


def write_recbole(folder: Path) -> None:
    folder.mkdir()
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float\n"]
    lines += [f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS]
    (folder / "ml-100k.inter").write_text("".join(lines), encoding="utf-8")
    rows = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"]
    rows += [f"{i}\tFilm {i}\t{y}\t{' '.join(g)}\n" for i, (y, g) in MOVIES.items()]
    (folder / "ml-100k.item").write_text("".join(rows), encoding="utf-8")


def convert(source: Path, out: Path) -> tuple[list[list[str]], np.ndarray]:
    subprocess.run([sys.executable, str(SCRIPT), str(source), str(out)], check=True)
    lines = (out / "ml100k.inter").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "userID\titemID\trating\ttimestamp\tx_label"
    return [line.split("\t") for line in lines[1:]], np.load(out / "image_feat.npy")


def test_both_layouts_give_the_same_split_and_features(tmp_path):
    write_grouplens(tmp_path / "grouplens")
    write_recbole(tmp_path / "recbole")
    rows, features = convert(tmp_path / "grouplens", tmp_path / "a")
    rows_b, features_b = convert(tmp_path / "recbole", tmp_path / "b")
    assert rows == rows_b
    np.testing.assert_array_equal(features, features_b)

    # Items liked by a kept user, renumbered 0.. in id order: 10, 11, 12, 14 (13 is disliked).
    assert features.shape == (4, 128) and features.dtype == np.float32
    assert np.isfinite(features).all()
    # User 7 -> 0 (11 at 100, 10 at 200, 12 at 300), user 8 -> 1 (12, 14, 10); user 9 dropped.
    # Last in time is the test (2), the one before it the validation (1).
    assert rows == [
        ["0", "1", "1", "100", "0"],
        ["0", "0", "1", "200", "1"],
        ["0", "2", "1", "300", "2"],
        ["1", "2", "1", "50", "0"],
        ["1", "3", "1", "60", "1"],
        ["1", "0", "1", "70", "2"],
    ]


def test_same_tags_give_features_closer_than_different_tags(tmp_path):
    write_recbole(tmp_path / "recbole")
    _, features = convert(tmp_path / "recbole", tmp_path / "out")
    # 10 (Comedy, 1990s) shares both tags with nothing but its decade with 12 (Drama, 1990s)
    # and nothing with 11 (Action Sci-Fi, 1970s).
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    assert unit[0] @ unit[2] > unit[0] @ unit[1]


def test_a_folder_without_either_layout_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "neither u.data nor ml-100k.inter" in result.stderr
    assert not (tmp_path / "out").exists()


def refusal(source: Path, out: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(source), str(out)], capture_output=True, text=True
    )
    assert result.returncode != 0 and not out.exists()
    return result.stderr


def test_malformed_rows_are_refused_naming_the_file_line_and_field(tmp_path):
    write_grouplens(tmp_path / "grouplens")
    data = tmp_path / "grouplens" / "u.data"
    good = data.read_text(encoding="ascii").splitlines(keepends=True)
    for bad, says in (
        ("7\t10\tfour\t200\n", "rating 'four' is not a number in 0-5"),
        ("7\t10\tnan\t200\n", "rating 'nan' is not a number in 0-5"),
        ("7\t10\t4\tinf\n", "time 'inf' is not a whole number"),
        ("7\t10\t4\t1e400\n", "time '1e400' is not a whole number"),
        ("x7\t10\t4\t200\n", "user 'x7' is not a whole number"),
        ("7\t10\t4\n", "expected 4 tab fields"),
    ):
        data.write_text("".join(good[:2] + [bad] + good[2:]), encoding="ascii")
        assert f"u.data:3: {says}" in refusal(tmp_path / "grouplens", tmp_path / "out")
    write_recbole(tmp_path / "recbole")
    inter = tmp_path / "recbole" / "ml-100k.inter"
    lines = inter.read_text(encoding="utf-8").splitlines(keepends=True)
    inter.write_text("".join(lines[:3] + ["7\t10\t9\t200\n"] + lines[3:]), encoding="utf-8")
    assert "ml-100k.inter:4: rating '9' is not a number in 0-5" in refusal(
        inter.parent, tmp_path / "out"
    )
    inter.write_text("".join(lines[:3] + ["7\t\u0663\t4\t200\n"] + lines[3:]), encoding="utf-8")
    assert "ml-100k.inter:4: item '\u0663' is not a whole number" in refusal(
        inter.parent, tmp_path / "out"
    )
    inter.write_text(lines[0].replace("rating:float", "score:float") + "".join(lines[1:]))
    assert "ml-100k.inter:1: no column rating:float" in refusal(inter.parent, tmp_path / "out")
