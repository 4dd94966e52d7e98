"""The live state in a database: artworks added, purchases recorded and favourites changed
through the API.

SQLite by default (a file beside the exports), any SQLAlchemy URL otherwise (PostgreSQL when
several replicas share it). A write is committed before the API acknowledges it, so what the
API acknowledged survives a restart or a model swap. Features are stored as float32 bytes so
that a new model can re-embed the artworks added live.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

metadata = sa.MetaData()
live_items = sa.Table(
    "live_items",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.String(200), nullable=False, unique=True),
    sa.Column("artist_id", sa.String(200), nullable=False),
    sa.Column("one_of_a_kind", sa.Boolean, nullable=False),
    sa.Column("upload_time", sa.Float, nullable=False),  # unix seconds
    sa.Column("features", sa.LargeBinary, nullable=False),  # float32, little-endian
)
purchases = sa.Table(
    "purchases",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(200), nullable=False, index=True),
    sa.Column("item_id", sa.String(200), nullable=False),
    sa.Column("timestamp", sa.Float, nullable=False),  # unix seconds
)


favourites = sa.Table(
    "favourites",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(200), nullable=False),
    sa.Column("item_id", sa.String(200), nullable=False),
    sa.UniqueConstraint("customer_id", "item_id"),
)


@dataclass(frozen=True)
class NewItem:
    item_id: str
    artist_id: str
    one_of_a_kind: bool
    upload_time: float
    features: np.ndarray  # [feature_dim] float32


@dataclass(frozen=True)
class Purchase:
    customer_id: str
    item_id: str
    timestamp: float


class Store:
    def __init__(self, url: str):
        self.url = url
        self.engine = sa.create_engine(url)
        metadata.create_all(self.engine)

    def add_items(self, items: Sequence[NewItem]) -> None:
        """All or nothing, in one transaction."""
        rows = [
            {
                "item_id": item.item_id,
                "artist_id": item.artist_id,
                "one_of_a_kind": item.one_of_a_kind,
                "upload_time": item.upload_time,
                "features": np.asarray(item.features, dtype="<f4").tobytes(),
            }
            for item in items
        ]
        with self.engine.begin() as connection:
            connection.execute(live_items.insert(), rows)

    def add_purchases(self, records: Sequence[Purchase]) -> None:
        rows = [
            {"customer_id": p.customer_id, "item_id": p.item_id, "timestamp": p.timestamp}
            for p in records
        ]
        with self.engine.begin() as connection:
            connection.execute(purchases.insert(), rows)

    def change_favourites(self, customer_id: str, add: Sequence[str], remove: Sequence[str]):
        """One transaction: `remove` deleted, then `add` inserted where not already there."""
        with self.engine.begin() as connection:
            if remove:
                connection.execute(
                    favourites.delete().where(
                        favourites.c.customer_id == customer_id, favourites.c.item_id.in_(remove)
                    )
                )
            if add:
                present = set(
                    connection.execute(
                        sa.select(favourites.c.item_id).where(
                            favourites.c.customer_id == customer_id, favourites.c.item_id.in_(add)
                        )
                    ).scalars()
                )
                rows = [{"customer_id": customer_id, "item_id": i} for i in add if i not in present]
                if rows:
                    connection.execute(favourites.insert(), rows)

    def favourites(self) -> list[tuple[str, str]]:
        """Every (customer_id, item_id) favourite, in the order added."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(favourites.c.customer_id, favourites.c.item_id).order_by(favourites.c.seq)
            )
            return [(row.customer_id, row.item_id) for row in rows]

    def items(self) -> list[NewItem]:
        """Every artwork added live, in the order added."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(live_items).order_by(live_items.c.seq))
            return [
                NewItem(
                    row.item_id,
                    row.artist_id,
                    bool(row.one_of_a_kind),
                    float(row.upload_time),
                    np.frombuffer(row.features, dtype="<f4").astype(np.float32),
                )
                for row in rows
            ]

    def purchases(self) -> list[Purchase]:
        """Every purchase recorded live, in the order recorded."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(purchases).order_by(purchases.c.seq))
            return [Purchase(r.customer_id, r.item_id, float(r.timestamp)) for r in rows]

    def close(self) -> None:
        self.engine.dispose()
