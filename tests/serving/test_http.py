"""The service over real HTTP: every endpoint, its errors, persistence, model swaps, fuzzing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from serving.process import curator_service
from tests.serving.live_service import serve_copy
from training.copurchase import FILE_NAME as COPURCHASE_FILE
from training.copurchase import CoPurchase
from training.data.dataset import load_dataset
from training.evaluation.interface import QueryBatch
from training.evaluation.splits import training_split
from training.export import export_run
from training.nearest_purchase import FILE_NAME as NEAREST_FILE
from training.nearest_purchase import NearestPurchase, TermWeights
from training.trained_towers import load_run_recommender

KEY = {"X-API-Key": "test-key"}


@pytest.fixture(scope="module")
def dataset(small_marketplace):
    return load_dataset(small_marketplace)


@pytest.fixture(scope="module")
def server(tiny_export, tmp_path_factory):
    running = serve_copy(
        tiny_export,
        tmp_path_factory.mktemp("served"),
        api_key="test-key",
        max_k=50,
        max_body_bytes=45_000_000,
    )
    yield running
    running.stop()


def copy_export(source, target):
    """A copy of an export as a new version (its manifest names the version), appearing at
    once, as `curator export` writes them."""
    staging = target.with_name(f".{target.name}.tmp")
    shutil.copytree(source, staging)
    manifest = json.loads((staging / "manifest.json").read_text())
    manifest["version"] = int(target.name)
    (staging / "manifest.json").write_text(json.dumps(manifest))
    staging.rename(target)


def artwork(item_id: str, features: np.ndarray, artist_id: str = "artist-new") -> dict:
    return {"item_id": item_id, "artist_id": artist_id, "features": features.tolist()}


def test_health_readiness_model_and_metrics(server):
    assert server.client.get("/healthz").json() == {"status": "alive"}
    assert server.client.get("/readyz").json() == {"status": "ready", "model_version": 1}
    manifest = server.client.get("/v1/model").json()
    assert manifest["version"] == 1 and manifest["catalogue"]["items"] == 1_500
    server.client.post("/v1/recommendations", json={"k": 3})
    metrics = server.client.get("/metrics").text
    assert (
        'curator_requests_total{method="POST",route="/v1/recommendations",status="200"}' in metrics
    )
    assert "curator_model_version 1.0" in metrics
    assert "curator_catalogue_items 1500.0" in metrics
    assert "curator_request_seconds_bucket" in metrics


def assert_serves_the_evaluation_ranking(client, recommender, dataset, customers: int = 25):
    """The top 20 served for real customers' profiles, scores and ids (where not tied), are
    `recommender`'s (the evaluation's model row) over the whole catalogue, ranked now (the
    freshness term's ages move by the seconds the requests take: far inside the tolerance)."""
    users = dataset.purchases.groupby("user_id")["item"].apply(list).head(customers)
    profiles = [np.unique(items) for items in users]
    scores = recommender.score(
        QueryBatch(
            np.arange(len(profiles)),
            users.index.to_numpy(),
            np.full(len(profiles), time.time()),
            profiles,
        ),
        np.arange(dataset.n_items),
    )
    for profile, row_scores in zip(profiles, scores, strict=True):
        body = {
            "item_ids": dataset.item_ids[profile].tolist(),
            "k": 20,
            "exclude_purchased": False,
            "available_only": False,
        }
        answer = client.post("/v1/recommendations", json=body).json()
        assert answer["strategy"] == "model"
        want = np.argsort(-row_scores, kind="stable")[:20]
        got_scores = np.array([item["score"] for item in answer["items"]])
        np.testing.assert_allclose(got_scores, row_scores[want], rtol=1e-4, atol=1e-5)
        distinct = np.abs(np.diff(row_scores[want], append=-np.inf)) > 1e-4
        distinct &= np.abs(np.diff(row_scores[want], prepend=np.inf)) > 1e-4
        got_ids = np.array([item["item_id"] for item in answer["items"]])
        assert (got_ids[distinct] == dataset.item_ids[want][distinct]).all()


def test_recommendations_equal_the_evaluation_model_row(server, trained_run, dataset):
    assert server.client.get("/v1/model").json()["version"] == 1
    assert_serves_the_evaluation_ranking(
        server.client, load_run_recommender(trained_run, dataset), dataset
    )


def test_an_export_with_every_term_serves_what_the_evaluation_ranks(trained_run, dataset, tmp_path):
    """The tiny run with all seven calibrated terms above 0 (nearest purchase, profile mean,
    popularity, co-purchases over item-kNN's and EASE's weights fitted as calibration fits
    them, freshness with a tau of ten years, so that the years-old test catalogue still differs
    in it, era), exported and served by a real uvicorn process: the answers are the
    evaluation's ranking with the same terms, now."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    term = NearestPurchase.load(run / "model" / NEAREST_FILE)
    weights = TermWeights(0.5, 0.5, 0.1, 1.0, 0.5, 3650.0, 0.5, 90.0, 2.0)
    term.with_weights(weights).save(run / "model")
    fit = training_split(dataset)[0]
    CoPurchase.fit(fit, dataset.item_ids).save(run / "model")
    CoPurchase.fit_ease(fit, dataset.item_ids, l2=10.0).save(run / "model")
    export = export_run(run, dataset, tmp_path / "exports", progress=lambda _: None)
    manifest = json.loads((export / "manifest.json").read_text())
    described = manifest["nearest_purchase"]
    assert (described["copurchase_weight"], described["freshness_weight"]) == (1.0, 0.5)
    assert (described["freshness_days"], described["era_weight"]) == (3650.0, 0.5)
    assert described["ease_weight"] == 2.0
    assert f"model/{COPURCHASE_FILE}" in manifest["files"]
    assert "model/ease.npz" in manifest["files"]
    recommender = load_run_recommender(run, dataset)
    assert recommender.weights == weights
    with curator_service(tmp_path / "exports", tmp_path / "live.db", tmp_path / "log") as served:
        assert_serves_the_evaluation_ranking(served.client, recommender, dataset, customers=15)


def test_a_known_customer_gets_unsold_artworks_they_did_not_buy(server, dataset):
    customer = dataset.purchases["user_id"].iloc[0]
    bought = set(dataset.purchases.loc[dataset.purchases["user_id"] == customer, "item_id"])
    answer = server.client.post("/v1/recommendations", json={"customer_id": customer, "k": 50})
    items = [item["item_id"] for item in answer.json()["items"]]
    assert answer.json()["strategy"] == "model" and len(items) == 50
    sold = set(dataset.items.loc[dataset.items["one_of_a_kind"], "item_id"]) & set(
        dataset.purchases["item_id"]
    )
    assert not (set(items) & bought) and not (set(items) & sold)
    scores = [item["score"] for item in answer.json()["items"]]
    assert scores == sorted(scores, reverse=True)


def test_no_profile_gets_the_popular_available_artworks(server):
    answer = server.client.post("/v1/recommendations", json={"customer_id": "never-seen", "k": 5})
    assert answer.json()["strategy"] == "popular" and len(answer.json()["items"]) == 5
    scores = [item["score"] for item in answer.json()["items"]]
    assert scores == sorted(scores, reverse=True) and scores[0] >= 1


def test_batch_answers_each_request_like_the_single_endpoint(server, dataset):
    requests = [
        {"item_ids": dataset.item_ids[[3, 9]].tolist(), "k": 4},
        {"k": 2},
        {"customer_id": dataset.purchases["user_id"].iloc[5], "k": 3},
    ]
    batch = server.client.post("/v1/recommendations:batch", json={"requests": requests}).json()
    singles = [server.client.post("/v1/recommendations", json=r).json() for r in requests]
    for together, alone in zip(batch["results"], singles, strict=True):
        assert together["strategy"] == alone["strategy"]
        assert [i["item_id"] for i in together["items"]] == [i["item_id"] for i in alone["items"]]
        np.testing.assert_allclose(  # a batched matrix product may round differently
            [i["score"] for i in together["items"]], [i["score"] for i in alone["items"]], rtol=1e-5
        )


def test_similar_artworks_are_visually_close_and_available(server, dataset):
    item_id = dataset.item_ids[0]
    answer = server.client.get(f"/v1/items/{item_id}/similar", params={"k": 5}).json()
    assert answer["strategy"] == "similar" and len(answer["items"]) == 5
    assert item_id not in [item["item_id"] for item in answer["items"]]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "detail"),
    [
        ("post", "/v1/recommendations", {"k": 51}, 422, "k: 51 is out of range [1, 50]"),
        ("post", "/v1/recommendations", {"k": 0}, 422, "greater than or equal to 1"),
        ("post", "/v1/recommendations", {"item_ids": ["nope", "gone"]}, 404, "'nope', 'gone'"),
        ("post", "/v1/recommendations", {"kk": 1}, 422, "Extra inputs are not permitted"),
        (
            "post",
            "/v1/recommendations:batch",
            {"requests": [{"k": 1}, {"item_ids": ["nope"]}]},
            404,
            "requests[1].item_ids: unknown item id(s) 'nope'",
        ),
        ("get", "/v1/items/nope/similar", None, 404, "unknown item id(s) 'nope'"),
        (
            "post",
            "/v1/items",
            {"items": [artwork("z", np.zeros(7))]},
            422,
            "7 values, expected 2048",
        ),
        (
            "post",
            "/v1/purchases",
            {"purchases": [{"customer_id": "c", "item_id": "nope"}]},
            404,
            "'nope'",
        ),
    ],
)
def test_bad_requests_get_a_4xx_that_names_the_problem(server, method, path, body, status, detail):
    response = getattr(server.client, method)(path, headers=KEY, **({"json": body} if body else {}))
    assert response.status_code == status, response.text
    assert detail in str(response.json()["detail"])


def test_a_body_over_the_limit_is_refused_with_the_json_problem(server):
    """Declared (Content-Length) or streamed (chunked); the declared one was answered with
    Starlette's plain-text "Content Too Large"."""

    def chunks():
        for _ in range(46):
            yield b" " * 1_000_000

    headers = {**KEY, "Content-Type": "application/json"}
    for content in (b" " * 45_000_001, chunks()):
        response = server.client.post("/v1/items", content=content, headers=headers)
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"detail": "body: larger than max_body_bytes (45000000 bytes)"}
    # the limit is the service's: a body within it is read and answered as usual
    response = server.client.post("/v1/items", content=b" " * 1_000, headers=headers)
    assert response.status_code == 400, response.text


def test_write_endpoints_need_the_api_key(server):
    response = server.client.post(
        "/v1/purchases", json={"purchases": [{"customer_id": "c", "item_id": "x"}]}
    )
    assert response.status_code == 401 and "X-API-Key" in response.json()["detail"]
    assert server.client.post("/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 401


def test_new_artworks_are_searchable_at_once_and_purchases_update_profiles(server, dataset):
    features = np.asarray(dataset.features[10])
    body = {"items": [artwork("twin-10", features), artwork("twin-10b", features * 1.01)]}
    added = server.client.post("/v1/items", json=body, headers=KEY)
    assert added.status_code == 200 and added.json()["accepted"] == 2
    similar = server.client.get(f"/v1/items/{dataset.item_ids[10]}/similar", params={"k": 3}).json()
    assert {"twin-10", "twin-10b"} <= {item["item_id"] for item in similar["items"]}
    again = server.client.post("/v1/items", json=body, headers=KEY)
    assert again.status_code == 409 and "already in the catalogue" in again.json()["detail"]

    bought = server.client.post(
        "/v1/purchases",
        json={"purchases": [{"customer_id": "visitor-1", "item_id": "twin-10"}]},
        headers=KEY,
    )
    assert bought.status_code == 200
    answer = server.client.post("/v1/recommendations", json={"customer_id": "visitor-1", "k": 10})
    items = [item["item_id"] for item in answer.json()["items"]]
    assert answer.json()["strategy"] == "model" and "twin-10" not in items
    as_given = server.client.post("/v1/recommendations", json={"item_ids": ["twin-10"], "k": 10})
    assert items == [item["item_id"] for item in as_given.json()["items"]]  # the same profile
    sold_again = server.client.post(
        "/v1/purchases",
        json={"purchases": [{"customer_id": "visitor-2", "item_id": "twin-10"}]},
        headers=KEY,
    )
    assert sold_again.status_code == 409 and "already sold" in sold_again.json()["detail"]


def test_adding_1000_artworks_takes_under_5_seconds(server, dataset):
    rng = np.random.default_rng(0)
    features = np.asarray(dataset.features[:1000]) + rng.normal(0, 0.01, (1000, 2048))
    body = {"items": [artwork(f"bulk-{n}", f, "artist-1") for n, f in enumerate(features)]}
    response = server.client.post("/v1/items", json=body, headers=KEY)
    assert response.status_code == 200 and response.json()["accepted"] == 1000
    # (the time is measured by benchmarks/bench_serving.py, not asserted here)
    assert server.client.get("/v1/items/bulk-999/similar").status_code == 200


def test_acknowledged_writes_survive_a_crash(tiny_export, tmp_path, dataset):
    root = tmp_path / "exports"
    shutil.copytree(tiny_export, root / "1")
    first = curator_service(root, tmp_path / "live.db", tmp_path / "service.log")
    features = np.asarray(dataset.features[20])
    assert (
        first.client.post("/v1/items", json={"items": [artwork("kept", features)]}).status_code
        == 200
    )
    purchase = {"purchases": [{"customer_id": "loyal", "item_id": "kept"}]}
    assert first.client.post("/v1/purchases", json=purchase).status_code == 200
    first.stop(kill=True)  # no shutdown hook runs

    second = curator_service(root, tmp_path / "live.db", tmp_path / "service.log")
    try:
        assert second.client.get("/metrics").text.count("curator_catalogue_items 1501.0") == 1
        answer = second.client.post("/v1/recommendations", json={"customer_id": "loyal"}).json()
        assert answer["strategy"] == "model"
        assert "kept" not in [item["item_id"] for item in answer["items"]]
        again = second.client.post(
            "/v1/purchases", json={"purchases": [{"customer_id": "x", "item_id": "kept"}]}
        )
        assert again.status_code == 409  # still sold
    finally:
        second.stop()


def test_model_swap_under_load_drops_no_request_and_refuses_a_broken_export(
    tiny_export, tmp_path, dataset
):
    root = tmp_path / "exports"
    shutil.copytree(tiny_export, root / "1")
    server = curator_service(root, tmp_path / "live.db", tmp_path / "service.log")
    try:
        features = np.asarray(dataset.features[30])
        server.client.post("/v1/items", json={"items": [artwork("live-1", features)]})
        failures, answered, stop = [], [], threading.Event()

        def load():
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stop.is_set():
                    response = client.post(
                        "/v1/recommendations", json={"item_ids": ["live-1"], "k": 5}
                    )
                    (answered if response.status_code == 200 else failures).append(response)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        copy_export(tiny_export, root / "2")
        swapped = server.client.post("/admin/reload")
        assert swapped.status_code == 200 and swapped.json()["model_version"] == 2

        copy_export(tiny_export, root / "3")
        (root / "3" / "model" / "towers.index").write_bytes(b"not a checkpoint")
        refused = server.client.post("/admin/reload")
        stop.set()
        for thread in threads:
            thread.join()
        assert refused.status_code == 409
        assert "3" in refused.json()["detail"] and "towers" in refused.json()["detail"]
        assert server.client.get("/readyz").json()["model_version"] == 2
        assert failures == [] and len(answered) > 20
        versions = {response.json()["model_version"] for response in answered}
        assert versions <= {1, 2} and 2 in versions
        # the artwork added live was re-embedded by the new model
        assert server.client.get("/v1/items/live-1/similar").json()["model_version"] == 2
    finally:
        server.stop()


def test_the_schema_and_the_answers_agree(server):
    """schemathesis against the app's own OpenAPI schema with every check (status codes, bodies
    and headers as documented, schema-valid requests accepted, invalid ones refused, auth
    enforced, the stateful phase): any failure of any kind fails."""
    done = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
            "--checks", "all", "--max-examples", "25",
            "--header", "X-API-Key: test-key", "--exclude-path", "/admin/reload",
            "--generation-deterministic", "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-2000:]


def test_the_watcher_switches_to_a_new_export_by_itself(tiny_export, tmp_path):
    root = tmp_path / "exports"
    shutil.copytree(tiny_export, root / "1")
    server = curator_service(
        root, tmp_path / "live.db", tmp_path / "service.log", watch_seconds="0.5"
    )
    try:
        copy_export(tiny_export, root / "2")
        deadline = time.monotonic() + 60
        while server.client.get("/readyz").json()["model_version"] != 2:
            assert time.monotonic() < deadline, "the watcher did not load version 2"
            time.sleep(0.2)
        assert 'curator_reloads_total{outcome="loaded"} 2.0' in server.client.get("/metrics").text
    finally:
        server.stop()


def test_image_uploads_are_refused_when_no_extractor_is_configured(server):
    answer = server.client.post(
        "/v1/items/image",
        data={"item_id": "photo-1"},
        files={"image": ("p.png", b"\x89PNG\r\n\x1a\n", "image/png")},
        headers=KEY,
    )
    assert answer.status_code == 404
    assert "image uploads are not enabled" in answer.json()["detail"]


def recommend(server, headers=None, **body):
    answer = server.client.post("/v1/recommendations", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_crowding_filters_and_explanations_over_http(server, dataset):
    purchases = dataset.purchases
    counts = purchases.groupby("user_id").size()
    customer = str(counts[counts >= 3].index[0])
    bought = set(purchases.loc[purchases["user_id"] == customer, "item_id"])
    plain = recommend(server, customer_id=customer, k=10)
    crowded = recommend(server, customer_id=customer, k=10, max_per_artist=1, explain=True)
    artists = [item["artist_id"] for item in crowded["items"]]
    assert len(artists) == 10 == len(set(artists))
    for item in crowded["items"]:
        assert item["because"]["item_id"] in bought
        assert -1.0 <= item["because"]["similarity"] <= 1.0
    assert all("because" not in item for item in plain["items"])
    chosen = sorted({item["artist_id"] for item in plain["items"]})[:2]
    only = recommend(server, customer_id=customer, k=10, artists=chosen)
    assert only["items"] and {item["artist_id"] for item in only["items"]} <= set(chosen)
    without = recommend(server, customer_id=customer, k=10, exclude_artists=chosen)
    assert not {item["artist_id"] for item in without["items"]} & set(chosen)
    skipped = [item["item_id"] for item in plain["items"][:3]]
    rest = recommend(server, customer_id=customer, k=7, exclude_item_ids=skipped)
    assert [i["item_id"] for i in rest["items"]] == [i["item_id"] for i in plain["items"][3:]]
    visitor = recommend(server, k=5, max_per_artist=1, explain=True)
    assert visitor["strategy"] == "popular"
    assert [item["because"] for item in visitor["items"]] == [None] * 5
    assert len({item["artist_id"] for item in visitor["items"]}) == 5
    unknown = server.client.post(
        "/v1/recommendations", json={"customer_id": customer, "exclude_item_ids": ["nope"]}
    )
    assert unknown.status_code == 404 and "exclude_item_ids" in unknown.json()["detail"]
    zero = server.client.post("/v1/recommendations", json={"max_per_artist": 0})
    assert zero.status_code == 422 and "max_per_artist" in zero.json()["detail"]


def test_favourites_join_the_profile_and_survive_a_restart(tiny_export, tmp_path, dataset):
    root = tmp_path / "exports"
    shutil.copytree(tiny_export, root / "1")
    liked = [str(i) for i in dataset.item_ids[[3, 17, 40]]]
    path = "/v1/customers/fan-1/favourites"
    first = curator_service(root, tmp_path / "live.db", tmp_path / "s.log", api_key="k")
    try:
        assert recommend(first, customer_id="fan-1")["strategy"] == "popular"
        refused = first.client.post(path, json={"add": liked})
        assert refused.status_code == 401
        key = {"X-API-Key": "k"}
        unknown = first.client.post(path, json={"add": [liked[0], "nope"]}, headers=key)
        assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
        assert first.client.get(path).json() == {"customer_id": "fan-1", "item_ids": []}
        added = first.client.post(path, json={"add": liked}, headers={"X-API-Key": "k"})
        assert added.status_code == 200 and added.json()["item_ids"] == liked
        by_favourites = recommend(first, customer_id="fan-1")
        assert by_favourites["strategy"] == "model"
        assert by_favourites == recommend(first, item_ids=liked)  # the same profile
    finally:
        first.stop(kill=True)
    second = curator_service(root, tmp_path / "live.db", tmp_path / "s.log", api_key="k")
    try:
        assert second.client.get(path).json()["item_ids"] == liked
        assert recommend(second, customer_id="fan-1") == by_favourites
        removed = second.client.post(path, json={"remove": liked}, headers={"X-API-Key": "k"})
        assert removed.json()["item_ids"] == []
        assert recommend(second, customer_id="fan-1")["strategy"] == "popular"
        bad = second.client.get("/v1/customers/a%20b/favourites")
        assert bad.status_code == 422
    finally:
        second.stop()
