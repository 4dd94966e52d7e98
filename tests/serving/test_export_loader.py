"""What a reload checks before switching: every damaged export is an ExportError naming the
field or the file, and nothing else escapes."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from serving.export_loader import (
    REQUIRED_FILES,
    ExportError,
    IndexSettings,
    NearestPurchaseManifest,
    load_serving_model,
    verify_files,
)
from training.export import FORMAT_VERSION, MANIFEST, version_entries
from training.index import IndexConfig


def copy_version(source: Path, target: Path, change=None) -> Path:
    shutil.copytree(source, target)
    if change is not None:
        manifest = json.loads((target / MANIFEST).read_text())
        change(manifest)
        (target / MANIFEST).write_text(json.dumps(manifest))
    return target


def test_the_export_loads_with_the_index_settings_of_its_manifest(tiny_export):
    manifest = json.loads((tiny_export / MANIFEST).read_text())
    assert manifest["format"] == FORMAT_VERSION == 3
    model = load_serving_model(tiny_export)
    assert model.version == 1 and model.manifest == manifest
    assert model.index == IndexConfig(**manifest["index"]["settings"])
    assert manifest["index"]["serving_recall_at_10"] == 1.0  # exact search serves 1,500
    assert manifest["index"]["kind"] == "brute_force"
    files, others = version_entries(tiny_export)
    assert sorted(manifest["files"]) == files and not others
    assert set(REQUIRED_FILES) <= set(files)
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (tiny_export / name).stat().st_size


def test_the_manifest_schema_has_every_index_config_field():
    assert set(IndexSettings.model_fields) == {f.name for f in dataclasses.fields(IndexConfig)}


def test_loading_never_reads_the_training_config(tiny_export, tmp_path):
    def change(manifest):  # a config today's TrainConfig would refuse
        manifest["config"] = {"no_such_field": 1, "export_k": -5, "scann_min_items": "x"}

    model = load_serving_model(copy_version(tiny_export, tmp_path / "1", change))
    assert model.index.k == json.loads((tiny_export / MANIFEST).read_text())["index"]["k"]


def settings(**changes):
    def change(manifest):
        manifest["index"]["settings"].update(changes)

    return change


def catalogue(**changes):
    def change(manifest):
        manifest["catalogue"].update(changes)

    return change


def first_file(manifest) -> str:
    return sorted(manifest["files"])[0]


BAD_MANIFESTS = {
    "version is a word": (lambda m: m.update(version="two"), r"version: .*'two'"),
    "version is null": (lambda m: m.update(version=None), r"version: .*None"),
    "version is a string of digits": (lambda m: m.update(version="1"), r"version: "),
    "version is true": (lambda m: m.update(version=True), r"version: "),
    "version is not the directory's": (lambda m: m.update(version=2), r"version: 2, but .*'1'"),
    "version is negative": (lambda m: m.update(version=-1), r"version: "),
    "catalogue is a list": (lambda m: m.update(catalogue=[1, 2]), r"catalogue: .*\[1, 2\]"),
    "catalogue.items missing": (lambda m: m["catalogue"].pop("items"), r"catalogue\.items: "),
    "catalogue.items negative": (catalogue(items=-1), r"catalogue\.items: "),
    "catalogue.items a float": (catalogue(items=1500.0), r"catalogue\.items: "),
    "catalogue.items a string": (catalogue(items="1500"), r"catalogue\.items: "),
    "catalogue.items wrong": (catalogue(items=1499), r"catalogue\.items says 1,499"),
    "catalogue.feature_dim wrong": (catalogue(feature_dim=3), r"catalogue\.feature_dim is 3"),
    "catalogue.vector_dim wrong": (catalogue(vector_dim=5), r"catalogue\.vector_dim is 5"),
    "index settings missing": (lambda m: m["index"].pop("settings"), r"index\.settings: "),
    "index.settings.k zero": (settings(k=0), r"index\.settings\.k: "),
    "index.settings.k a string": (settings(k="100"), r"index\.settings\.k: "),
    "index share beyond 1": (settings(leaves_to_search_share=2.0), r"leaves_to_search_share"),
    "prior_slot a string": (settings(prior_slot="false"), r"index\.settings\.prior_slot: "),
    "prior_slot flipped": (
        lambda m: m["index"]["settings"].update(
            prior_slot=not m["index"]["settings"]["prior_slot"]
        ),
        r"index\.settings\.prior_slot is",
    ),
    "index settings unknown field": (settings(leaves=3), r"index\.settings\.leaves: "),
    "index kind not what the settings make": (
        settings(scann_min_items=1),
        r"index\.kind: 'brute_force', but index\.settings make 'scann'",
    ),
    "serving recall missing": (
        lambda m: m["index"].pop("serving_recall_at_10"),
        r"index\.serving_recall_at_10: ",
    ),
    "prior rows apart wrong": (
        lambda m: m["index"].update(prior_rows_apart=m["index"]["prior_rows_apart"] + 1),
        r"index\.prior_rows_apart is",
    ),
    "uses_ids flipped": (lambda m: m.update(uses_ids=not m["uses_ids"]), r"uses_ids is"),
    "unknown top-level field": (lambda m: m.update(extra=1), r"extra: "),
    "files missing": (lambda m: m.pop("files"), r"files: "),
    "files entry a bad hash": (
        lambda m: m["files"][first_file(m)].update(sha256="abc"),
        r"files\..*\.sha256: ",
    ),
    "files outside the export": (
        lambda m: m["files"].update({"../escape": m["files"][first_file(m)]}),
        r"files: .*'\.\./escape' is not a path inside",
    ),
    "files without a required file": (
        lambda m: m["files"].pop("towers.json"),
        r"files: .*does not list \['towers\.json'\]",
    ),
    "format 2": (lambda m: m.update(format=2), r"export format 2, this service reads 3"),
    "not an object": (lambda m: m.clear(), r"export format None"),
}


@pytest.mark.parametrize("breakage", list(BAD_MANIFESTS))
def test_a_bad_manifest_field_is_an_export_error_naming_it(tiny_export, tmp_path, breakage):
    change, message = BAD_MANIFESTS[breakage]
    version = copy_version(tiny_export, tmp_path / "1", change)
    with pytest.raises(ExportError, match=message) as refused:
        load_serving_model(version)
    assert str(refused.value).startswith(str(version))


def test_a_version_directory_not_named_by_its_number_is_refused(tiny_export, tmp_path):
    with pytest.raises(ExportError, match=r"version: 1, but the directory is 'latest'"):
        load_serving_model(copy_version(tiny_export, tmp_path / "latest"))


def test_an_unreadable_manifest_is_refused(tiny_export, tmp_path):
    version = copy_version(tiny_export, tmp_path / "1")
    (version / MANIFEST).write_text("{not json")
    with pytest.raises(ExportError, match="cannot read manifest.json"):
        load_serving_model(version)
    (version / MANIFEST).write_text("[1, 2]")
    with pytest.raises(ExportError, match="export format None"):
        load_serving_model(version)


@pytest.mark.parametrize(
    "damaged",
    [
        "retrieval/saved_model.pb",
        "item_tower/saved_model.pb",
        "user_tower/saved_model.pb",
        "catalogue/items.csv",
        "catalogue/item_vectors.npy",
        "towers.json",
    ],
)
def test_a_changed_file_of_the_same_size_is_refused_naming_it(tiny_export, tmp_path, damaged):
    version = copy_version(tiny_export, tmp_path / "1")
    target = version / damaged
    target.write_bytes(target.read_bytes()[:-64] + b"\0" * 64)
    with pytest.raises(ExportError, match=rf"{damaged} is not the file exported"):
        load_serving_model(version)


def test_garbage_in_a_saved_model_variable_file_is_refused(tiny_export, tmp_path):
    version = copy_version(tiny_export, tmp_path / "1")
    variables = sorted((version / "retrieval" / "variables").glob("variables.data-*"))[0]
    variables.write_bytes(os.urandom(variables.stat().st_size))
    with pytest.raises(ExportError, match=r"retrieval/variables/variables\.data-.* not the file"):
        load_serving_model(version)


def test_a_stray_missing_or_resized_file_is_refused_naming_it(tiny_export, tmp_path):
    version = copy_version(tiny_export, tmp_path / "1")
    (version / "retrieval" / "docids.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(ExportError, match=r"not in manifest\.json: \['retrieval/docids\.pkl'\]"):
        load_serving_model(version)
    (version / "retrieval" / "docids.pkl").unlink()
    (version / "catalogue" / "purchases.csv").unlink()
    with pytest.raises(ExportError, match=r"missing file\(s\): \['catalogue/purchases\.csv'\]"):
        load_serving_model(version)
    shutil.copy(tiny_export / "catalogue" / "purchases.csv", version / "catalogue")
    with (version / "towers.json").open("a") as file:
        file.write(" ")
    with pytest.raises(ExportError, match=r"towers\.json has [\d,]+ bytes, manifest\.json says"):
        load_serving_model(version)


def test_a_link_in_an_export_is_refused(tiny_export, tmp_path):
    version = copy_version(tiny_export, tmp_path / "1")
    (version / "elsewhere").symlink_to(tmp_path)
    with pytest.raises(ExportError, match=r"not regular files \(links\?\): \['elsewhere'\]"):
        load_serving_model(version)


def test_an_unexpected_failure_is_an_export_error_with_the_path(tiny_export, tmp_path, monkeypatch):
    version = copy_version(tiny_export, tmp_path / "1")

    def broken(*args, **kwargs):
        raise KeyError("upload_time")

    monkeypatch.setattr("serving.export_loader.load_purchases_table", broken)
    with pytest.raises(ExportError, match=rf"^{version}: cannot load: KeyError: 'upload_time'"):
        load_serving_model(version)


def test_non_finite_or_mis_shaped_vectors_are_refused_even_with_matching_hashes(
    tiny_export, tmp_path
):
    """The hashes say the files are the ones exported; the later checks hold anyway (an
    export written wrong, or a manifest rewritten to match damaged files)."""
    from training.export import file_digests

    version = copy_version(tiny_export, tmp_path / "1")
    path = version / "catalogue" / "item_vectors.npy"
    vectors = np.load(path)
    vectors[3, 0] = np.nan
    np.save(path, vectors)

    def rehash():
        manifest = json.loads((version / MANIFEST).read_text())
        manifest["files"] = file_digests(version)
        (version / MANIFEST).write_text(json.dumps(manifest))

    rehash()
    with pytest.raises(ExportError, match="item_vectors.npy has non-finite values"):
        load_serving_model(version)
    np.save(path, vectors[:, :-1].astype(np.float64))
    rehash()
    with pytest.raises(ExportError, match=r"item_vectors\.npy is float64 .*expected float32"):
        load_serving_model(version)


def test_hash_verification_is_fast(tiny_export):
    manifest = load_serving_model(tiny_export)
    from serving.export_loader import Manifest

    files = Manifest.model_validate(manifest.manifest).files
    started = time.perf_counter()
    verify_files(tiny_export, files)
    seconds = time.perf_counter() - started
    total = sum(entry.bytes for entry in files.values())
    print(f"verified {len(files)} files, {total / 2**20:.1f} MiB, in {seconds * 1000:.1f} ms")
    assert seconds < 2.0


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"weight": 0.0}, "every weight is 0"),
        ({"weight": 0.0, "freshness_weight": 0.5}, "freshness_weight above 0 needs"),
        ({"weight": 0.0, "era_weight": 0.5, "era_days": 0.0}, "era_weight above 0 needs"),
        ({"weight": 1.0, "freshness_days": float("nan")}, "finite number"),
        ({"weight": 1.0, "era_days": -1.0}, "greater than or equal to 0"),
    ],
)
def test_a_manifests_term_weights_are_checked(fields, message):
    with pytest.raises(ValidationError, match=message):
        NearestPurchaseManifest(dim=4, **fields)
    assert NearestPurchaseManifest(dim=4, weight=0.0, era_weight=0.5, era_days=30.0).era_weight


def test_the_co_purchase_matrices_must_be_what_the_manifest_announces(
    trained_run, small_marketplace, tmp_path
):
    """An export whose EASE weight is above 0 carries model/ease.npz; without it, or with an
    item-kNN matrix under its name (the hashes rewritten to match), it is refused."""
    from training.copurchase import CoPurchase
    from training.data.dataset import load_dataset
    from training.evaluation.splits import training_split
    from training.export import export_run, file_digests
    from training.nearest_purchase import FILE_NAME, NearestPurchase, TermWeights

    dataset = load_dataset(small_marketplace)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    term = NearestPurchase.load(run / "model" / FILE_NAME)
    term.with_weights(TermWeights(ease=1.0)).save(run / "model")
    fit = training_split(dataset)[0]
    CoPurchase.fit_ease(fit, dataset.item_ids, l2=10.0).save(run / "model")
    version = export_run(run, dataset, tmp_path / "exports", progress=lambda _: None)
    model = load_serving_model(version)
    assert model.ease.kind == "ease" and model.copurchase is None

    def rehash():
        manifest = json.loads((version / MANIFEST).read_text())
        manifest["files"] = file_digests(version)
        (version / MANIFEST).write_text(json.dumps(manifest))

    ease = version / "model" / "ease.npz"
    knn = CoPurchase.fit(fit, dataset.item_ids).save(tmp_path)
    shutil.copyfile(knn, ease)
    rehash()
    with pytest.raises(ExportError, match="ease.npz holds the item-knn kind, expected ease"):
        load_serving_model(version)
    ease.unlink()
    rehash()
    with pytest.raises(ExportError, match="gives ease_weight above 0 but lacks model/ease.npz"):
        load_serving_model(version)
