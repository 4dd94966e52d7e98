"""Request and response bodies of the HTTP API (pydantic; they are the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from training.data.columns import TIME_RULE
from training.data.ids import ID_MAX_LENGTH, ID_PATTERN, ID_RULE

# the one id alphabet (training/data/ids.py): every id can be addressed in a URL path
Id = Annotated[
    str,
    StringConstraints(max_length=ID_MAX_LENGTH, pattern=ID_PATTERN),
    Field(description=f"an id: {ID_RULE}"),
]
OptionalId = Annotated[
    str,
    StringConstraints(max_length=ID_MAX_LENGTH, pattern=f"^({ID_PATTERN[1:-1]})?$"),
    Field(description=f"empty, or an id: {ID_RULE}"),
]
# Image features are small (ResNet-50's pooled activations stay below about 50); a bound well
# above that keeps every value, after z-scoring and the towers' layers, far inside float32.
FEATURE_LIMIT = 1e6
Feature = Annotated[float, Field(ge=-FEATURE_LIMIT, le=FEATURE_LIMIT)]
# validated as JSON numbers, held as a float32 array
Float32Vector = Annotated[list[Feature], AfterValidator(lambda v: np.asarray(v, np.float32))]
MAX_GIVEN_ITEMS = 1_000  # profiles use the most recent max_profile artworks anyway
# an upload or purchase time (serving/service.py checks both bounds: JSON Schema has none)
TIME_FIELD = (
    f"default: now; {TIME_RULE} (else 409: a bound the schema cannot express); more than 5 "
    "minutes ahead of the service's clock: 409"
)


class Strict(BaseModel):
    """Request bodies: unknown fields refused, no type coercion (`5.0` is not an int, `0` not a
    bool), finite numbers only. Validated from the JSON bytes (serving/bodies.py)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class Problem(BaseModel):
    """Every 4xx and 5xx answer: what is wrong and where (the JSON field, the header)."""

    detail: str


class RecommendationRequest(Strict):
    customer_id: Id | None = None
    item_ids: list[Id] = Field(
        default_factory=list,
        max_length=MAX_GIVEN_ITEMS,
        description="a profile, or more of it: a cart, favourites",
    )
    k: int = Field(10, ge=1, description="how many artworks; at most the service's max_k")
    exclude_purchased: bool = Field(True, description="leave out the profile's artworks")
    available_only: bool = Field(True, description="leave out sold one-of-a-kind artworks")
    max_per_artist: int | None = Field(
        None, ge=1, description="crowding: at most this many artworks of one artist"
    )
    artists: list[Id] | None = Field(
        None, max_length=MAX_GIVEN_ITEMS, description="only artworks by these artists"
    )
    exclude_artists: list[Id] = Field(
        default_factory=list, max_length=MAX_GIVEN_ITEMS, description="no artworks by these"
    )
    exclude_item_ids: list[Id] = Field(
        default_factory=list, max_length=MAX_GIVEN_ITEMS, description="never these artworks"
    )
    explain: bool = Field(
        False, description="add `because` to each artwork: the profile artwork closest to it"
    )


class Because(BaseModel):
    item_id: str = Field(description="the profile artwork closest to the recommended one")
    similarity: float = Field(
        ge=-1.0, le=1.0, description="their cosine in the towers' item space, [-1, 1]"
    )


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    artist_id: str
    because: Because | None = Field(
        None, description="with `explain`: why (null for popular or similar answers)"
    )


class Recommendations(BaseModel):
    model_version: int
    strategy: str = Field(
        description="`model` (the towers), `popular` (no profile) or `similar` (an artwork's)"
    )
    items: list[RecommendedItem]


class BatchRequest(Strict):
    requests: list[RecommendationRequest] = Field(min_length=1)


class BatchResponse(BaseModel):
    results: list[Recommendations]


class NewArtwork(Strict):
    item_id: Id
    artist_id: OptionalId = ""
    one_of_a_kind: bool = True
    features: Float32Vector = Field(
        description=f"the artwork's image features: feature_dim values, |x| <= {FEATURE_LIMIT:g}"
    )
    upload_time: datetime | None = Field(
        None,
        description=TIME_FIELD,
    )


class NewArtworks(Strict):
    items: list[NewArtwork] = Field(min_length=1)


class PurchaseIn(Strict):
    customer_id: Id
    item_id: Id
    timestamp: datetime | None = Field(
        None,
        description=TIME_FIELD,
    )


class Purchases(Strict):
    purchases: list[PurchaseIn] = Field(min_length=1)


class FavouritesChange(Strict):
    add: list[Id] = Field(default_factory=list, max_length=MAX_GIVEN_ITEMS)
    remove: list[Id] = Field(
        default_factory=list, max_length=MAX_GIVEN_ITEMS, description="applied before `add`"
    )


class Favourites(BaseModel):
    customer_id: str
    item_ids: list[str] = Field(description="the customer's favourites, in the order added")


class Accepted(BaseModel):
    accepted: int
    catalogue_size: int


class Readiness(BaseModel):
    status: str = Field(description="`ready`, or `loading` (503) before the first model")
    model_version: int | None


class ReloadResult(BaseModel):
    model_version: int
    path: str = Field(description="the version directory, relative to the export root")
    seconds: float
