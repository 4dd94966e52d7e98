"""Request and response bodies of the HTTP API (pydantic; they are the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# an id: 1-200 characters, no leading or trailing whitespace
Id = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RecommendationRequest(Strict):
    customer_id: Id | None = None
    item_ids: list[Id] = Field(
        default_factory=list, description="a profile, or more of it: a cart, favourites"
    )
    k: int = Field(10, ge=1, description="how many artworks; at most the service's max_k")
    exclude_purchased: bool = Field(True, description="leave out the profile's artworks")
    available_only: bool = Field(True, description="leave out sold one-of-a-kind artworks")


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    artist_id: str


class Recommendations(BaseModel):
    model_version: int
    strategy: str = Field(description="`model` (the towers) or `popular` (no profile)")
    items: list[RecommendedItem]


class BatchRequest(Strict):
    requests: list[RecommendationRequest] = Field(min_length=1)


class BatchResponse(BaseModel):
    results: list[Recommendations]


class NewArtwork(Strict):
    item_id: Id
    artist_id: str = Field("", max_length=200)
    one_of_a_kind: bool = True
    features: list[float] = Field(description="the artwork's image features (feature_dim values)")
    upload_time: datetime | None = Field(None, description="default: now")


class NewArtworks(Strict):
    items: list[NewArtwork] = Field(min_length=1)


class PurchaseIn(Strict):
    customer_id: Id
    item_id: Id
    timestamp: datetime | None = Field(None, description="default: now")


class Purchases(Strict):
    purchases: list[PurchaseIn] = Field(min_length=1)


class Accepted(BaseModel):
    accepted: int
    catalogue_size: int


class ReloadResult(BaseModel):
    model_version: int
    path: str
    seconds: float
