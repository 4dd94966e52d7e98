"""The notebooks' helpers: recommendations for a customer and the item map."""

import numpy as np

from training.data.dataset import load_dataset
from training.data.history import sold_originals, visual_clusters
from training.evaluation.interface import QueryBatch
from training.explore import artwork_table, item_map, recommend
from training.trained_towers import load_run_recommender


def test_recommendations_are_for_sale_not_bought_and_best_first(trained_run, small_marketplace):
    dataset = load_dataset(small_marketplace)
    recommender = load_run_recommender(trained_run, dataset)
    customer = dataset.purchases["user_id"].value_counts().index[0]
    rows, scores = recommend(recommender, dataset, customer, k=15)
    bought = dataset.purchases.loc[dataset.purchases["user_id"] == customer, "item"]
    assert rows.size == 15 and not set(rows) & set(bought)
    assert not sold_originals(dataset)[rows].any()
    assert (np.diff(scores) <= 0).all()
    profile = dataset.purchases.loc[dataset.purchases["user_id"] == customer, "item"].unique()
    # the run's scores (towers and profile terms, every purchase counted), whatever the others
    batch = QueryBatch(np.array([0]), np.array([customer]), np.array([np.inf]), [profile])
    np.testing.assert_allclose(scores, recommender.score(batch, rows)[0], rtol=1e-5)
    user = recommender.user_vectors([np.sort(profile)])[0]
    towers = recommender.item_vectors[rows] @ user
    assert not np.allclose(scores, towers)  # the tiny run keeps some term (summary.json)
    table = artwork_table(dataset, rows, visual_clusters(dataset, n_clusters=10), scores)
    assert list(table.columns) == ["item_id", "artist_id", "style cluster", "score"]
    assert item_map(recommender.item_vectors).shape == (dataset.n_items, 2)
