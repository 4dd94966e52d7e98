"""Model swaps over real HTTP: every damaged export refused with a 409 naming what is wrong,
the old model still serving; the watcher logs a broken export, skips it, and takes a newer one."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from serving.process import curator_service
from tests.serving.live_service import sample_value, serve_copy
from tests.serving.test_http import copy_export

KEY = {"X-API-Key": "test-key"}


@pytest.fixture(scope="module")
def server(tiny_export, tmp_path_factory):
    root = tmp_path_factory.mktemp("reloads")
    running = serve_copy(tiny_export, root, api_key="test-key")
    running.root = root
    yield running
    running.stop()


def edit_manifest(version_dir, change) -> None:
    path = version_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def reloads(server, outcome: str) -> float:
    return sample_value(server, f'curator_reloads_total{{outcome="{outcome}"}}')


BREAKAGES = {
    "version is a word": (lambda m: m.update(version="two"), "version"),
    "version is null": (lambda m: m.update(version=None), "version"),
    "catalogue is a list": (lambda m: m.update(catalogue=[1, 2]), "catalogue"),
    "index settings missing": (lambda m: m["index"].pop("settings", None), "index"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_bad_manifest_is_refused_and_the_old_model_keeps_serving(server, tiny_export, breakage):
    change, field = BREAKAGES[breakage]
    version = server.root / "2"
    copy_export(tiny_export, version)
    try:
        edit_manifest(version, change)
        refused_before = reloads(server, "refused")
        response = server.client.post("/admin/reload", headers=KEY)
        assert response.status_code == 409, response.text
        detail = response.json()["detail"]
        assert "still serving the previous model" in detail and field in detail, detail
        assert server.client.get("/readyz").json() == {"status": "ready", "model_version": 1}
        answer = server.client.post("/v1/recommendations", json={"k": 3})
        assert answer.status_code == 200 and answer.json()["model_version"] == 1
        assert reloads(server, "refused") == refused_before + 1
    finally:
        shutil.rmtree(version)


@pytest.mark.parametrize(
    "damaged", ["retrieval/saved_model.pb", "item_tower/saved_model.pb", "catalogue/items.csv"]
)
def test_a_damaged_file_is_refused_even_when_the_towers_load(server, tiny_export, damaged):
    version = server.root / "2"
    copy_export(tiny_export, version)
    try:
        target = version / damaged
        target.write_bytes(target.read_bytes()[:-64] + b"\0" * 64)
        response = server.client.post("/admin/reload", headers=KEY)
        assert response.status_code == 409, response.text
        assert damaged in response.json()["detail"]
        assert server.client.get("/readyz").json()["model_version"] == 1
    finally:
        shutil.rmtree(version)


def test_a_stray_pickle_in_an_export_is_refused(server, tiny_export):
    version = server.root / "2"
    copy_export(tiny_export, version)
    try:
        (version / "retrieval" / "docids.pkl").write_bytes(b"\x80\x04N.")
        response = server.client.post("/admin/reload", headers=KEY)
        assert response.status_code == 409 and "docids.pkl" in response.json()["detail"]
    finally:
        shutil.rmtree(version)


def test_the_watcher_skips_a_broken_export_and_takes_a_newer_good_one(tiny_export, tmp_path):
    root = tmp_path / "exports"
    shutil.copytree(tiny_export, root / "1")
    log = tmp_path / "service.log"
    server = curator_service(root, tmp_path / "live.db", log, watch_seconds="0.3")
    try:
        copy_export(tiny_export, root / "2")
        edit_manifest(root / "2", lambda m: m.update(catalogue=[1, 2]))
        deadline = time.monotonic() + 60
        while "not switching" not in log.read_text():
            assert time.monotonic() < deadline, "the watcher did not report the broken export"
            time.sleep(0.2)
        assert server.client.get("/readyz").json()["model_version"] == 1
        copy_export(tiny_export, root / "3")
        while server.client.get("/readyz").json()["model_version"] != 3:
            assert time.monotonic() < deadline, "the watcher did not load version 3"
            time.sleep(0.2)
        assert log.read_text().count("not switching") == 1  # reported once, not retried
    finally:
        server.stop()
