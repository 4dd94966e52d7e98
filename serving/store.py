"""The live state in a database: artworks added, purchases recorded and favourites changed
through the API; the source of truth that replicas share.

SQLite by default (a file beside the exports), any SQLAlchemy URL otherwise: PostgreSQL through
psycopg 3 (`postgresql+psycopg://user@host/db`) when several replicas share it. A write is
committed before the API acknowledges it, so what the API acknowledged survives a restart or a
model swap. Features are stored as float32 bytes so that a new model can re-embed the artworks
added live.

**One sale per original, enforced by the database.** A purchase of a one-of-a-kind artwork
also inserts the artwork into `sold_originals`, whose primary key is the artwork: a second sale,
from any replica, cannot commit (`AlreadySold`, the API's 409), and its purchase rows roll back
with it.

**A change feed.** Every table is append-only with a sequence number (`seq`); favourites are
events (added or removed). Writers are serialised (SQLite's write lock; on PostgreSQL a
transaction-level advisory lock taken first), so sequence numbers are committed in order and a
replica that has read up to `seq` n never later finds a row below n: `changes_since(cursor)`
is everything another replica wrote since.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa

from serving.errors import Conflict

WRITE_LOCK_KEY = 7_242_001  # PostgreSQL advisory lock serialising this schema's writers

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
sold_originals = sa.Table(
    "sold_originals",
    metadata,
    sa.Column("item_id", sa.String(200), primary_key=True),  # the constraint: one sale
    sa.Column("customer_id", sa.String(200), nullable=False),
)
favourite_events = sa.Table(
    "favourite_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(200), nullable=False),
    sa.Column("item_id", sa.String(200), nullable=False),
    sa.Column("added", sa.Boolean, nullable=False),  # false: removed
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


@dataclass(frozen=True)
class FavouriteEvent:
    customer_id: str
    item_id: str
    added: bool


@dataclass(frozen=True)
class Cursor:
    """The last sequence number read of each table."""

    items: int = 0
    purchases: int = 0
    favourites: int = 0


@dataclass(frozen=True)
class Changes:
    """Rows written after a cursor, in commit order, and the cursor after them."""

    items: list[NewItem] = field(default_factory=list)
    purchases: list[Purchase] = field(default_factory=list)
    favourites: list[FavouriteEvent] = field(default_factory=list)
    cursor: Cursor = Cursor()

    def __bool__(self) -> bool:
        return bool(self.items or self.purchases or self.favourites)


class AlreadySold(Conflict):
    def __init__(self, item_ids: Sequence[str]):
        self.item_ids = list(item_ids)
        super().__init__(
            f"purchases: {self.item_ids[0]!r} is a one-of-a-kind artwork that is already sold"
        )


class ItemsExist(Conflict):
    """Artworks another replica added (or this model skipped) under the same ids."""

    def __init__(self, item_ids: Sequence[str]):
        self.item_ids = list(item_ids)
        super().__init__(f"items: item id(s) already in the catalogue: {self.item_ids[:10]}")


class DatabaseUnavailable(ValueError):
    """The live state's database cannot be opened: the URL, its driver, or the server."""


class Store:
    def __init__(self, url: str):
        self.url = url
        try:
            self.engine = sa.create_engine(url)
            self.postgresql = self.engine.dialect.name == "postgresql"
            with self._writing() as connection:  # replicas starting together create tables once
                metadata.create_all(connection)
        except (sa.exc.SQLAlchemyError, ImportError) as error:  # ImportError: a missing driver
            raise DatabaseUnavailable(
                f"database {_shown(url)}: cannot open it ({_first_line(error)})"
            ) from None

    @contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        """A write transaction; writers one at a time (see the module doc)."""
        with self.engine.begin() as connection:
            if self.postgresql:
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(WRITE_LOCK_KEY)))
            yield connection

    def add_items(self, items: Sequence[NewItem]) -> None:
        """All or nothing, in one transaction; ItemsExist (nothing written) if the database
        already holds one of the ids: another replica added it since this one last read the
        feed, or this replica's model skipped it."""
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
        ids = [item.item_id for item in items]
        try:
            with self._writing() as connection:
                existing = _existing_items(connection, ids)
                if existing:
                    raise ItemsExist(existing)
                connection.execute(live_items.insert(), rows)
        except sa.exc.IntegrityError:  # the key itself, should a writer race the check
            with self.engine.connect() as connection:
                raise ItemsExist(_existing_items(connection, ids) or ids) from None

    def add_purchases(self, records: Sequence[Purchase], originals: Collection[str] = ()):
        """All or nothing; `originals` are the one-of-a-kind artworks among them, which no
        other purchase may have taken (AlreadySold otherwise, nothing written)."""
        rows = [
            {"customer_id": p.customer_id, "item_id": p.item_id, "timestamp": p.timestamp}
            for p in records
        ]
        with self._writing() as connection:
            connection.execute(purchases.insert(), rows)
            if originals:
                taken = connection.execute(
                    sa.select(sold_originals.c.item_id).where(
                        sold_originals.c.item_id.in_(list(originals))
                    )
                ).scalars()
                taken = sorted(taken)
                if taken:
                    raise AlreadySold(taken)  # rolls the purchases back
                buyer = {p.item_id: p.customer_id for p in records}
                try:
                    connection.execute(
                        sold_originals.insert(),
                        [{"item_id": i, "customer_id": buyer[i]} for i in originals],
                    )
                except sa.exc.IntegrityError:  # the constraint itself, should a writer race
                    raise AlreadySold(sorted(originals)) from None

    def change_favourites(self, customer_id: str, add: Sequence[str], remove: Sequence[str]):
        """One transaction: the removals, then the additions, as events."""
        events = [{"customer_id": customer_id, "item_id": i, "added": False} for i in remove]
        events += [{"customer_id": customer_id, "item_id": i, "added": True} for i in add]
        if events:
            with self._writing() as connection:
                connection.execute(favourite_events.insert(), events)

    def changes_since(self, cursor: Cursor = Cursor()) -> Changes:
        """Every row written after `cursor`, in commit order (the whole state from Cursor()).
        Purchases and favourite events are read before artworks: each read may see a later
        snapshot than the one before, and an artwork always commits before any row that names
        it, so every artwork a row names is among those read (or was read before)."""
        purchase_rows = self._rows_after(purchases, cursor.purchases)
        event_rows = self._rows_after(favourite_events, cursor.favourites)
        item_rows = self._rows_after(live_items, cursor.items)
        return Changes(
            [_new_item(row) for row in item_rows],
            [_purchase(row) for row in purchase_rows],
            [FavouriteEvent(r.customer_id, r.item_id, bool(r.added)) for r in event_rows],
            Cursor(
                item_rows[-1].seq if item_rows else cursor.items,
                purchase_rows[-1].seq if purchase_rows else cursor.purchases,
                event_rows[-1].seq if event_rows else cursor.favourites,
            ),
        )

    def _rows_after(self, table: sa.Table, seq: int) -> list:
        with self.engine.connect() as connection:
            return connection.execute(
                sa.select(table).where(table.c.seq > seq).order_by(table.c.seq)
            ).all()

    def items(self) -> list[NewItem]:
        """Every artwork added live, in the order added."""
        return [_new_item(row) for row in self._rows_after(live_items, 0)]

    def purchases(self) -> list[Purchase]:
        """Every purchase recorded live, in the order recorded."""
        return [_purchase(row) for row in self._rows_after(purchases, 0)]

    def favourites(self) -> list[tuple[str, str]]:
        """Every (customer_id, item_id) favourite now, in the order added."""
        events = self._rows_after(favourite_events, 0)
        return favourites_after(
            [FavouriteEvent(r.customer_id, r.item_id, bool(r.added)) for r in events]
        )

    def close(self) -> None:
        self.engine.dispose()


def _new_item(row) -> NewItem:
    return NewItem(
        row.item_id,
        row.artist_id,
        bool(row.one_of_a_kind),
        float(row.upload_time),
        np.frombuffer(row.features, dtype="<f4").astype(np.float32),
    )


def _purchase(row) -> Purchase:
    return Purchase(row.customer_id, row.item_id, float(row.timestamp))


def favourites_after(events: Sequence[FavouriteEvent]) -> list[tuple[str, str]]:
    """The favourites that `events` leave, in the order added (re-adding moves to the end)."""
    state: dict[tuple[str, str], None] = {}
    for event in events:
        key = (event.customer_id, event.item_id)
        state.pop(key, None)
        if event.added:
            state[key] = None
    return list(state)


def _existing_items(connection: sa.Connection, item_ids: Sequence[str]) -> list[str]:
    """The ones of `item_ids` the database holds, sorted."""
    query = sa.select(live_items.c.item_id).where(live_items.c.item_id.in_(list(item_ids)))
    return sorted(connection.execute(query).scalars())


def _shown(url: str) -> str:
    """`url` with its password hidden, when it parses as a URL."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return repr(url)


def _first_line(error: Exception) -> str:
    """SQLAlchemy's message without its SQL, parameters and documentation link."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
