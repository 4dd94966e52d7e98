"""Two `curator serve` processes on one database, SQLite and a real PostgreSQL: each applies the
other's writes within about a second, and an original is sold once whichever replica sells it."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from serving.process import curator_service
from serving.store import NewItem, Purchase, Store
from serving.throwaway_postgres import ThrowawayPostgres
from training.data.dataset import load_dataset

CATCH_UP_S = 2.0


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server for this module's tests."""
    if not ThrowawayPostgres.available():
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on the PATH")
    server = ThrowawayPostgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def replicas(tiny_export, tmp_path, database_url):
    root = tmp_path / "exports"
    shutil.copytree(tiny_export, root / "1")
    started = []

    def start(name: str, sync_seconds: float = 0.25):
        service = curator_service(
            root, None, tmp_path / f"{name}.log", database_url=database_url,
            sync_seconds=sync_seconds,
        )  # fmt: skip
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def eventually(check, timeout=CATCH_UP_S):
    """Polls `check()` until it is true; returns the seconds it took (fails after `timeout`)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"not caught up after {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def recommended(service, **body) -> list[str]:
    answer = service.client.post("/v1/recommendations", json={"k": 50, **body})
    assert answer.status_code == 200, answer.text
    return [item["item_id"] for item in answer.json()["items"]]


def test_a_write_on_one_replica_is_served_by_the_other(replicas, small_marketplace):
    a, b = replicas("a"), replicas("b")
    dataset = load_dataset(small_marketplace)
    features = np.asarray(dataset.features[7], np.float32).tolist()
    new = {"item_id": "from-a", "artist_id": "artist-x", "features": features}
    assert a.client.post("/v1/items", json={"items": [new]}).status_code == 200
    eventually(lambda: b.client.get("/v1/items/from-a/similar").status_code == 200)
    bought = {"purchases": [{"customer_id": "walk-in", "item_id": "from-a"}]}
    assert b.client.post("/v1/purchases", json=bought).status_code == 200
    # a sees b's purchase: the walk-in gets model recommendations, the original is sold
    eventually(lambda: a.client.post("/v1/recommendations", json={"customer_id": "walk-in"})
               .json()["strategy"] == "model")  # fmt: skip
    again = a.client.post("/v1/purchases", json={"purchases": [
        {"customer_id": "late", "item_id": "from-a"}]})  # fmt: skip
    assert again.status_code == 409
    liked = [str(i) for i in dataset.item_ids[[1, 2]]]
    path = "/v1/customers/fan/favourites"
    assert a.client.post(path, json={"add": liked}).status_code == 200
    eventually(lambda: b.client.get(path).json()["item_ids"] == liked)
    # a replica started later reads everything from the database
    c = replicas("c")
    assert c.client.get(path).json()["item_ids"] == liked
    assert c.client.get("/v1/items/from-a/similar").status_code == 200


def test_concurrent_sales_of_one_original_across_replicas_yield_one_sale(
    replicas, small_marketplace
):
    a, b = replicas("a"), replicas("b")
    dataset = load_dataset(small_marketplace)
    sold_in_log = set(dataset.purchases["item_id"])
    originals = [
        str(i)
        for i, unique in zip(dataset.item_ids, dataset.items["one_of_a_kind"], strict=True)
        if unique and i not in sold_in_log
    ][:15]
    urls = [a.url, b.url, a.url, b.url]

    def buy(job):
        url, customer, item_id = job
        body = {"purchases": [{"customer_id": customer, "item_id": item_id}]}
        return httpx.post(f"{url}/v1/purchases", json=body, timeout=30).status_code

    with ThreadPoolExecutor(4) as pool:
        for item_id in originals:
            jobs = [(url, f"buyer-{n}", item_id) for n, url in enumerate(urls)]
            statuses = sorted(pool.map(buy, jobs))
            assert statuses == [200, 409, 409, 409], (item_id, statuses)
    for service in (a, b):  # both agree: every one of them is sold
        eventually(lambda s=service: not set(originals) & set(recommended(s, k=100)))
        late = {"purchases": [{"customer_id": "late", "item_id": originals[0]}]}
        assert service.client.post("/v1/purchases", json=late).status_code == 409


def test_an_id_another_replica_added_is_a_409_before_the_feed_brings_it(
    replicas, small_marketplace
):
    """Once a 500 (the database's unique key) from the replica that had not read it yet."""
    a, b = replicas("a"), replicas("b", sync_seconds=3600)  # b reads the feed at start only
    features = np.asarray(load_dataset(small_marketplace).features[3], np.float32).tolist()
    body = {"items": [{"item_id": "twice", "features": features}]}
    assert a.client.post("/v1/items", json=body).status_code == 200
    response = b.client.post("/v1/items", json=body)
    assert response.status_code == 409, response.text
    assert response.json() == {"detail": "items: item id(s) already in the catalogue: ['twice']"}
    assert b.client.get("/v1/items/twice/similar").status_code == 404  # b has not read it


def test_a_live_artwork_of_another_dimension_is_skipped_and_later_writes_applied(
    replicas, small_marketplace, database_url, tmp_path
):
    """Once the change feed stopped at such a row for good (TensorFlow's shape error is not a
    ValueError), and a replica could neither start nor reload while the database held one."""
    a = replicas("a")
    dataset = load_dataset(small_marketplace)
    reprint = str(dataset.item_ids[~dataset.items["one_of_a_kind"].to_numpy()][0])
    other_model = Store(database_url)  # a replica serving a model of 5-d features
    other_model.add_items([NewItem("five-d", "", False, time.time(), np.ones(5, np.float32))])
    other_model.add_purchases([Purchase("walk-in", reprint, time.time())])
    other_model.change_favourites("walk-in", [reprint], [])
    other_model.close()
    eventually(lambda: a.client.get("/v1/customers/walk-in/favourites").json()["item_ids"]
               == [reprint])  # fmt: skip
    answer = a.client.post("/v1/recommendations", json={"customer_id": "walk-in"}).json()
    assert answer["strategy"] == "model"  # the purchase after the skipped artwork counts
    assert a.client.get("/v1/items/five-d/similar").status_code == 404
    for service in (a, replicas("b")):  # b starts with the row in the database
        assert service.client.get("/v1/customers/walk-in/favourites").json()["item_ids"] == [
            reprint
        ]
        assert service.client.post("/admin/reload").status_code == 200
    log = (tmp_path / "a.log").read_text()
    assert "live artwork 'five-d' skipped by this model: 'five-d' has 5 features" in log
