"""The HTTP ceiling for bench_serving.py: a FastAPI POST endpoint with the recommendation
request's shape that answers k fixed items without computing anything."""

from __future__ import annotations

from fastapi import FastAPI

from serving.schemas import RecommendationRequest, Recommendations, RecommendedItem

app = FastAPI()


@app.post("/v1/recommendations", response_model=Recommendations)
async def recommendations(body: RecommendationRequest) -> Recommendations:
    items = [
        RecommendedItem(item_id=f"art-{i}", score=1.0 / (i + 1), artist_id="a")
        for i in range(body.k)
    ]
    return Recommendations(model_version=0, strategy="trivial", items=items)
