"""`curator demo`: start the service on an export, show a few real requests and their answers.

The last step of `make run`. It starts `curator serve` as a child process, waits until it is
ready, then calls the API as the gallery's website would: a returning customer, a visitor's
cart, a visitor with no history, similar artworks, a new artwork uploaded (searchable at once)
and a purchase (the customer's recommendations change, the sold original disappears). Then it
keeps serving until Ctrl-C, or stops with `--no-keep-serving`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from serving.export_loader import newest_version
from serving.process import curator_service
from training.data.columns import read_csv
from training.data.dataset import open_dataset


def _show(title: str, request: dict | None, answer: dict, echo) -> None:
    echo(f"\n{title}")
    if request is not None:
        echo(f"  request: {json.dumps(request)}")
    echo(f"  strategy: {answer['strategy']}, model version {answer['model_version']}")
    for rank, item in enumerate(answer["items"], 1):
        echo(
            f"  {rank:>2}. {item['item_id']:<14} {item['artist_id']:<14} score {item['score']:.4f}"
        )


def run_demo(model_dir: Path, host: str, port: int, keep_serving: bool, echo=print) -> None:
    export = newest_version(model_dir)
    manifest = json.loads((export / "manifest.json").read_text())
    purchases = purchase_log(export)
    url = f"http://{host}:{port}"
    echo(f"starting the service on {url} with {export} ...")
    service = curator_service(
        model_dir, host=host, port=port, on_wait=lambda: echo("  loading the model ...")
    )
    try:
        _examples(service.client, manifest, purchases, echo)
        echo(f"\nthe service is running at {url}; interactive API docs: {url}/docs")
        if keep_serving:
            echo("press Ctrl-C to stop it")
            service.process.wait()
    except KeyboardInterrupt:
        echo("\nstopping the service")
    finally:
        service.stop()


def purchase_log(export: Path) -> pd.DataFrame:
    """The export's catalogue/purchases.csv with every id as written ("007" stays "007", not
    the number 7: MMRec imports and many shops use numeric ids)."""
    return read_csv(export / "catalogue" / "purchases.csv", "purchases.csv", ["user_id", "item_id"])


def _examples(client: httpx.Client, manifest: dict, purchases: pd.DataFrame, echo) -> None:
    model = client.get("/v1/model").json()
    echo(
        f"\nGET /v1/model: version {model['version']}, {model['catalogue']['items']:,} artworks, "
        f"index {model['index']['kind']} (recall@10 {model['index']['recall_at_10']})"
    )
    counts = purchases.groupby("user_id")["item_id"].agg(list)
    customer = counts.map(len).idxmax()
    echo(f"\ncustomer {customer} bought: {', '.join(counts[customer][:8])}")
    request = {"customer_id": customer, "k": 5}
    before = client.post("/v1/recommendations", json=request).json()
    _show("POST /v1/recommendations (a returning customer)", request, before, echo)

    cart = {"item_ids": list(purchases["item_id"].iloc[:3]), "k": 5}
    answer = client.post("/v1/recommendations", json=cart).json()
    _show("POST /v1/recommendations (a visitor's cart)", cart, answer, echo)

    visitor = {"customer_id": f"first-visit-{int(time.time())}", "k": 5}
    answer = client.post("/v1/recommendations", json=visitor).json()
    _show("POST /v1/recommendations (a visitor with no history)", visitor, answer, echo)

    liked = counts[customer][-1]
    answer = client.get(f"/v1/items/{liked}/similar", params={"k": 5}).json()
    _show(f"GET /v1/items/{liked}/similar", None, answer, echo)

    dataset = None
    if not manifest.get("dataset"):
        echo("\n(no POST /v1/items example: the export names no dataset to take features from)")
    else:
        try:
            dataset = open_dataset(manifest["dataset"], mmap=True)
        except (ValueError, FileNotFoundError) as error:  # moved, deleted, or not published here
            echo(
                f"\n(no POST /v1/items example: the export's dataset {manifest['dataset']} "
                f"cannot be opened here: {error})"
            )
    if dataset is not None:
        row = int(np.flatnonzero(dataset.item_ids == liked)[0])
        new_id = f"demo-upload-{int(time.time())}"
        upload = {
            "items": [
                {
                    "item_id": new_id,
                    "artist_id": str(dataset.items["artist_id"].iloc[row]),
                    "features": np.asarray(dataset.features[row], np.float32).tolist(),
                }
            ]
        }
        added = client.post("/v1/items", json=upload).json()
        echo(
            f"\nPOST /v1/items: uploaded {new_id} (the image features of {liked}, as a new "
            f"artwork): accepted {added['accepted']}, catalogue now {added['catalogue_size']:,}"
        )
        answer = client.get(f"/v1/items/{liked}/similar", params={"k": 3}).json()
        _show(f"GET /v1/items/{liked}/similar (the new artwork, at once)", None, answer, echo)

    top = before["items"][0]["item_id"]
    bought = {"purchases": [{"customer_id": customer, "item_id": top}]}
    response = client.post("/v1/purchases", json=bought)
    echo(f"\nPOST /v1/purchases {json.dumps(bought)}: {response.status_code} {response.json()}")
    after = client.post("/v1/recommendations", json=request).json()
    _show("POST /v1/recommendations (the same customer, after buying it)", request, after, echo)
