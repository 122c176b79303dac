"""The persistent append-only Merkle log, kept in the project's database.

Tables (created by :meth:`MerkleLog.ensure_schema`):

* ``log_state``: one row: origin, size, root of the sequenced tree.
* ``log_queue``: entries waiting for an index; writers enqueue in their own transaction, so ingest
  never waits on the tree.
* ``log_entries``: sequenced entries (index, leaf data, queue id they came from).
* ``log_tiles``: every perfect node, in tiles (:mod:`anchoring.tiles`).
* ``log_checkpoints``: every signed checkpoint, by size.

A single sequencer at a time (SQLite's write lock, PostgreSQL's row lock on ``log_state``) assigns
indices in batches, writes the new nodes and the new root in the same transaction as the entries,
so a crash leaves either the whole batch or none of it.  Proofs read O(log n) stored nodes, at
most one tile per ``TILE_HEIGHT`` levels, and never rehash the tree.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from . import merkle, tiles
from .checkpoint import Checkpoint
from .db import Cursor, Database
from .errors import LogError
from .merkle import NodeId, fold, node_hash
from .note import Signer, sign_note

_DDL = {
    "sqlite": {"blob": "BLOB", "bigint": "INTEGER", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"blob": "BYTEA", "bigint": "BIGINT", "serial": "BIGSERIAL PRIMARY KEY"},
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    origin TEXT NOT NULL,
    size {bigint} NOT NULL,
    root {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS log_queue (
    id {serial},
    data {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS log_entries (
    idx {bigint} PRIMARY KEY,
    data {blob} NOT NULL,
    queue_id {bigint}
);
CREATE TABLE IF NOT EXISTS log_tiles (
    level INTEGER NOT NULL,
    idx {bigint} NOT NULL,
    width INTEGER NOT NULL,
    hashes {blob} NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS log_checkpoints (
    size {bigint} PRIMARY KEY,
    root {blob} NOT NULL,
    note TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- Partial: entries appended directly (no queue id) cost the index nothing.
CREATE INDEX IF NOT EXISTS log_entries_queue_id ON log_entries (queue_id) WHERE queue_id IS NOT NULL
"""

TILE_CACHE_SIZE = 4096  # tiles of at most 16 KiB: 64 MiB, every leaf tile of a 10^6-leaf log
ENQUEUE_CHUNK = 500  # entries per INSERT: one round trip for a group's leaves, under every parameter limit
DELETE_CHUNK = 500  # ids per DELETE statement: far fewer round trips than one per row, under SQLite's 32,766-parameter limit
FOLD_CACHE_SIZE = 4096  # hashes of right-edge ranges, 32 bytes each


@dataclass(frozen=True)
class StoredCheckpoint:
    checkpoint: Checkpoint
    note: str
    created_at: str


class MerkleLog:
    def __init__(self, db: Database, origin: str) -> None:
        self.db = db
        self.origin = origin
        self._tiles: OrderedDict[tiles.TileId, tuple[int, bytes]] = OrderedDict()
        # Hash of a range that is not one perfect node, by (first node, last node) of its fold.
        self._folds: dict[tuple[NodeId, NodeId], bytes] = {}
        # The largest size this instance has read committed: the log never shrinks, so any size up
        # to it stays valid and a proof for it can be served from the caches alone.
        self._known_size = 0
        self._for_update = " FOR UPDATE" if db.dialect == "postgresql" else ""

    # -- schema -----------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the tables if needed and check that this database holds the log of ``origin``."""
        types = _DDL[self.db.dialect]
        with self.db.transaction(write=True) as cur:
            for statement in _SCHEMA.format(**types).split(";"):
                cur.execute(statement)
            cur.execute("SELECT origin FROM log_state WHERE id = 1")
            row = cur.fetchone()
            if row is None:
                cur.execute(
                    "INSERT INTO log_state (id, origin, size, root) VALUES (1, ?, 0, ?)",
                    (self.origin, merkle.EMPTY_ROOT),
                )
            elif row[0] != self.origin:
                raise LogError(
                    f"this database holds the log of origin {row[0]!r}, not {self.origin!r}: "
                    "set log_origin to the stored origin, or point database_url at another database"
                )

    # -- reading ----------------------------------------------------------------------------

    def state(self) -> tuple[int, bytes]:
        """(size, root) of the sequenced tree."""
        with self.db.transaction() as cur:
            return self._state(cur)

    def size(self) -> int:
        return self.state()[0]

    def _state(self, cur: Cursor, lock: bool = False) -> tuple[int, bytes]:
        cur.execute("SELECT size, root FROM log_state WHERE id = 1" + (self._for_update if lock else ""))
        row = cur.fetchone()
        if row is None:
            raise LogError("the log has no state row: call ensure_schema() first")
        size = int(row[0])
        if size > self._known_size:
            self._known_size = size
        return size, bytes(row[1])

    def entry(self, index: int) -> bytes:
        with self.db.transaction() as cur:
            cur.execute("SELECT data FROM log_entries WHERE idx = ?", (index,))
            row = cur.fetchone()
        if row is None:
            raise LogError(f"no entry at index {index}")
        return bytes(row[0])

    def leaf_hash(self, index: int) -> bytes:
        with self.db.transaction() as cur:
            size, _ = self._state(cur)
            self._check_index(index, size)
            return self._node(cur, (0, index))

    def root_at(self, size: int) -> bytes:
        """Root of the tree at any size up to the current one, from O(log n) stored nodes."""
        with self.db.transaction() as cur:
            current, root = self._state(cur)
            if size == current:
                return root
            self._check_size(size, current)
            return self._root(cur, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> tuple[int, list[bytes]]:
        """(size, audit path) for the leaf at ``index`` in the tree of ``size`` (default: current)."""
        if size is not None and 0 <= index < size <= self._known_size:
            return size, self._fold_groups_of_known_size(merkle.inclusion_nodes(index, size))
        with self.db.transaction() as cur:
            current, _ = self._state(cur)
            size = current if size is None else size
            self._check_size(size, current)
            self._check_index(index, size)
            return size, self._fold_groups(cur, merkle.inclusion_nodes(index, size))

    def consistency_proof(self, size1: int, size2: int | None = None) -> tuple[int, list[bytes]]:
        """(size2, proof) that the tree of ``size1`` is a prefix of the tree of ``size2``."""
        if size2 is not None and 0 < size1 <= size2 <= self._known_size:
            groups = merkle.consistency_nodes(size1, size2)
            return size2, self._fold_groups_of_known_size(groups)
        with self.db.transaction() as cur:
            current, _ = self._state(cur)
            size2 = current if size2 is None else size2
            self._check_size(size2, current)
            if not 0 < size1 <= size2:
                raise LogError(f"a consistency proof needs 0 < old size <= new size, got {size1} and {size2}")
            return size2, self._fold_groups(cur, merkle.consistency_nodes(size1, size2))

    @staticmethod
    def _check_size(size: int, current: int) -> None:
        if not 0 <= size <= current:
            raise LogError(f"size {size} is outside the log, whose size is {current}")

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if not 0 <= index < size:
            raise LogError(f"index {index} is outside a tree of size {size}")

    def _fold_groups_of_known_size(self, groups: Sequence[Sequence[NodeId]]) -> list[bytes]:
        """:meth:`_fold_groups` for a tree no larger than one this instance has read committed.

        The log never shrinks and a stored node never changes, so such a size needs no state read:
        the caches answer alone if they hold every node, else one read transaction loads the tiles.
        """
        out = self._fold_groups(None, groups)
        if out is None:
            with self.db.transaction() as cur:
                out = self._fold_groups(cur, groups)
        if out is None:  # only possible without a cursor
            raise LogError("tile lookup without a database cursor")
        return out

    def _fold_groups(self, cur: Cursor | None, groups: Sequence[Sequence[NodeId]]) -> list[bytes] | None:
        """One hash per group of perfect nodes (a single node, or the fold of a right-edge range).

        Without a cursor, from the caches only: None if a node is not cached.
        """
        folds = self._folds
        wanted: list[NodeId] = []
        for group in groups:
            if len(group) == 1:
                wanted.append(group[0])
            elif (group[0], group[-1]) not in folds:
                wanted.extend(group)
        found = self._lookup(cur, wanted)
        if found is None:
            return None
        out, at = [], 0
        for group in groups:
            if len(group) == 1:
                out.append(found[at])
                at += 1
                continue
            key = (group[0], group[-1])  # a range's first and last perfect nodes determine it
            value = folds.get(key)
            if value is None:
                value = fold(found[at : at + len(group)])
                at += len(group)
                if len(folds) >= FOLD_CACHE_SIZE:
                    folds.clear()
                folds[key] = value
            out.append(value)
        return out

    def _root(self, cur: Cursor, size: int) -> bytes:
        if size == 0:
            return merkle.EMPTY_ROOT
        return fold(self._nodes(cur, merkle.root_ranges(size)))

    def _node(self, cur: Cursor, node: NodeId) -> bytes:
        return self._nodes(cur, [node])[0]

    def _nodes(self, cur: Cursor, nodes: Sequence[NodeId]) -> list[bytes]:
        """Stored perfect nodes, each tile read at most once."""
        found = self._lookup(cur, nodes)
        if found is None:  # only possible without a cursor
            raise LogError("tile lookup without a database cursor")
        return found

    def _lookup(self, cur: Cursor | None, nodes: Sequence[NodeId]) -> list[bytes] | None:
        """Stored perfect nodes (this is the proofs' hot path), each tile read at most once.

        Without a cursor, from the tile cache only: None if a node is not cached.
        """
        height, offsets, cache = tiles.TILE_HEIGHT, tiles.ROW_OFFSETS, self._tiles
        out = []
        for level, index in nodes:
            tile_level, row = divmod(level, height)
            shift = height - row
            tile_id = (tile_level, index >> shift)
            position = index & ((1 << shift) - 1)
            tile = cache.get(tile_id)
            if tile is None or position >= tile[0] >> row:
                if cur is None:
                    return None
                tile = self._load_tile(cur, tile_id)
                if position >= tile[0] >> row:
                    raise LogError(f"node {(level, index)} is not stored: the log's tiles are incomplete")
            start = offsets[tile[0]][row] + 32 * position
            out.append(tile[1][start : start + 32])
        return out

    def _load_tile(self, cur: Cursor, tile_id: tiles.TileId) -> tuple[int, bytes]:
        cur.execute("SELECT width, hashes FROM log_tiles WHERE level = ? AND idx = ?", tile_id)
        row = cur.fetchone()
        if row is None:
            return 0, b""
        tile = (int(row[0]), bytes(row[1]))
        self._cache(tile_id, tile)
        return tile

    def _cache(self, tile_id: tiles.TileId, tile: tuple[int, bytes]) -> None:
        self._tiles[tile_id] = tile
        self._tiles.move_to_end(tile_id)
        while len(self._tiles) > TILE_CACHE_SIZE:
            self._tiles.popitem(last=False)

    # -- writing ----------------------------------------------------------------------------

    @staticmethod
    def enqueue(cur: Cursor, data: bytes) -> int:
        """Queue an entry inside the caller's transaction; :meth:`sequence` gives it an index.

        Returns the queue id, by which :meth:`index_of_queued` finds the index once sequenced.
        """
        cur.execute("INSERT INTO log_queue (data) VALUES (?) RETURNING id", (data,))
        row = cur.fetchone()
        if row is None:
            raise LogError("the database returned no id for the queued entry")
        return int(row[0])

    @staticmethod
    def enqueue_many(cur: Cursor, data: Sequence[bytes]) -> list[int]:
        """:meth:`enqueue` for several entries with one statement per :data:`ENQUEUE_CHUNK`; the queue
        ids, in the order of ``data``.

        Ids are drawn in row order within one INSERT (SQLite's rowid, PostgreSQL's sequence), so the
        returned ids sorted are the rows' ids in order, whatever order RETURNING lists them in.
        """
        ids: list[int] = []
        for at in range(0, len(data), ENQUEUE_CHUNK):
            chunk = data[at : at + ENQUEUE_CHUNK]
            cur.execute(f"INSERT INTO log_queue (data) VALUES {', '.join(['(?)'] * len(chunk))} RETURNING id", chunk)
            got = sorted(int(row[0]) for row in cur.fetchall())
            if len(got) != len(chunk):
                raise LogError(f"the database returned {len(got)} ids for {len(chunk)} queued entries")
            ids += got
        return ids

    def index_of_queued(self, queue_id: int) -> int | None:
        """The index the entry queued as ``queue_id`` was given, or None while it waits."""
        with self.db.transaction() as cur:
            cur.execute("SELECT idx FROM log_entries WHERE queue_id = ?", (queue_id,))
            row = cur.fetchone()
        return None if row is None else int(row[0])

    def append(self, entries: Iterable[bytes]) -> tuple[int, int]:
        """Sequence ``entries`` directly, in one transaction. Returns (first index, new size)."""
        batch = [bytes(e) for e in entries]

        def write(cur: Cursor) -> int:
            size, _ = self._state(cur, lock=True)
            if batch:
                self._write_batch(cur, size, batch, [None] * len(batch))
            return size

        size = self._in_write_transaction(write)
        return size, size + len(batch)

    def sequence(self, max_batch: int = 10_000) -> int:
        """Give the oldest queued entries their indices; returns how many were sequenced."""

        def write(cur: Cursor) -> int:
            size, _ = self._state(cur, lock=True)
            cur.execute("SELECT id, data FROM log_queue ORDER BY id LIMIT ?", (max_batch,))
            rows = cur.fetchall()
            if rows:
                self._write_batch(cur, size, [bytes(r[1]) for r in rows], [r[0] for r in rows])
                # By id, not by range: a lower id may belong to a transaction not yet committed.
                ids = [r[0] for r in rows]
                for at in range(0, len(ids), DELETE_CHUNK):
                    chunk = ids[at : at + DELETE_CHUNK]
                    cur.execute(f"DELETE FROM log_queue WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            return len(rows)

        return self._in_write_transaction(write)

    def _in_write_transaction(self, write):  # type: ignore[no-untyped-def]
        try:
            with self.db.transaction(write=True) as cur:
                return write(cur)
        except BaseException:
            # The cache may hold tiles this transaction wrote; they were never committed.
            self._tiles.clear()
            self._folds.clear()
            raise

    def _write_batch(
        self, cur: Cursor, size: int, batch: list[bytes], queue_ids: list[int | None]
    ) -> None:
        new_size = size + len(batch)
        cur.executemany(
            "INSERT INTO log_entries (idx, data, queue_id) VALUES (?, ?, ?)",
            [(size + i, data, qid) for i, (data, qid) in enumerate(zip(batch, queue_ids, strict=True))],
        )
        # New perfect nodes, level by level: level -> (index of the first new node, hashes).
        new: dict[int, tuple[int, list[bytes]]] = {0: (size, [merkle.leaf_hash(d) for d in batch])}
        level = 0
        while True:
            level += 1
            first, last = size >> level, new_size >> level
            if first == last:
                break
            below_first, below = new[level - 1]
            hashes = []
            for j in range(first, last):
                left = 2 * j
                left_hash = below[left - below_first] if left >= below_first else self._node(cur, (level - 1, left))
                hashes.append(node_hash(left_hash, below[left + 1 - below_first]))
            new[level] = (first, hashes)

        for tile_id, tile in self._write_tiles(cur, size, new_size, new):
            self._cache(tile_id, tile)

        def node(n: NodeId) -> bytes:
            lvl, idx = n
            if lvl in new and idx >= new[lvl][0]:
                return new[lvl][1][idx - new[lvl][0]]
            return self._node(cur, n)

        root = fold([node(n) for n in merkle.root_ranges(new_size)])
        cur.execute("UPDATE log_state SET size = ?, root = ? WHERE id = 1", (new_size, root))

    def _write_tiles(
        self, cur: Cursor, size: int, new_size: int, new: dict[int, tuple[int, list[bytes]]]
    ) -> list[tuple[tiles.TileId, tuple[int, bytes]]]:
        written = []
        tile_level = 0
        while tile_level * tiles.TILE_HEIGHT in new:
            bottom = tile_level * tiles.TILE_HEIGHT
            first_tile = new[bottom][0] >> tiles.TILE_HEIGHT
            last_tile = ((new_size >> bottom) - 1) >> tiles.TILE_HEIGHT
            for tile_index in range(first_tile, last_tile + 1):
                tile_id = (tile_level, tile_index)
                old_width = tiles.tile_width_at(tile_level, tile_index, size)
                width = tiles.tile_width_at(tile_level, tile_index, new_size)
                old_rows = self._old_rows(cur, tile_id, old_width)
                rows = []
                for r in range(tiles.TILE_HEIGHT):
                    start = (tile_index << (tiles.TILE_HEIGHT - r)) + (old_width >> r)
                    count = (width >> r) - (old_width >> r)
                    part = b""
                    if count:
                        first, hashes = new[bottom + r]
                        part = b"".join(hashes[start - first : start - first + count])
                    rows.append(old_rows[r] + part)
                tile = (width, tiles.build_blob(rows, width))
                written.append((tile_id, tile))
            tile_level += 1
        cur.executemany(
            "INSERT INTO log_tiles (level, idx, width, hashes) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (level, idx) DO UPDATE SET width = excluded.width, hashes = excluded.hashes",
            [(tid[0], tid[1], t[0], t[1]) for tid, t in written],
        )
        return written

    def _old_rows(self, cur: Cursor, tile_id: tiles.TileId, old_width: int) -> list[bytes]:
        if old_width == 0:
            return [b""] * tiles.TILE_HEIGHT
        cached = self._tiles.get(tile_id)
        if cached is None or cached[0] < old_width:
            cached = self._load_tile(cur, tile_id)
        width, blob = cached
        if width < old_width:
            raise LogError(f"tile {tile_id} holds {width} nodes, the log's size needs {old_width}")
        return [row[: tiles.HASH_SIZE * (old_width >> r)] for r, row in enumerate(tiles.split_rows(blob, width))]

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint(self, signer: Signer) -> StoredCheckpoint:
        """The signed checkpoint of the current tree: the stored one if the log has not grown."""
        with self.db.transaction(write=True) as cur:
            size, root = self._state(cur, lock=True)
            latest = self._latest_checkpoint(cur)
            if latest is not None and latest.checkpoint.size == size:
                return latest
            stored = self._sign(Checkpoint(self.origin, size, root), signer)
            cur.execute(
                "INSERT INTO log_checkpoints (size, root, note, created_at) VALUES (?, ?, ?, ?)",
                (size, root, stored.note, stored.created_at),
            )
            return stored

    def sign_at(self, size: int, signer: Signer) -> StoredCheckpoint:
        """A signed checkpoint for an earlier size (not stored): the stored one if there is one."""
        with self.db.transaction() as cur:
            cur.execute("SELECT size, root, note, created_at FROM log_checkpoints WHERE size = ?", (size,))
            row = cur.fetchone()
            if row is not None:
                return self._stored(row)
            current, _ = self._state(cur)
            self._check_size(size, current)
            root = self._root(cur, size)
        return self._sign(Checkpoint(self.origin, size, root), signer)

    def _sign(self, checkpoint: Checkpoint, signer: Signer) -> StoredCheckpoint:
        note = sign_note(checkpoint.body(), signer)
        return StoredCheckpoint(checkpoint, note, datetime.now(UTC).isoformat(timespec="seconds"))

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self.db.transaction() as cur:
            return self._latest_checkpoint(cur)

    def stored_checkpoint(self, size: int) -> StoredCheckpoint | None:
        with self.db.transaction() as cur:
            cur.execute("SELECT size, root, note, created_at FROM log_checkpoints WHERE size = ?", (size,))
            row = cur.fetchone()
        return None if row is None else self._stored(row)

    def checkpoints(self) -> list[StoredCheckpoint]:
        with self.db.transaction() as cur:
            cur.execute("SELECT size, root, note, created_at FROM log_checkpoints ORDER BY size")
            return [self._stored(r) for r in cur.fetchall()]

    def _latest_checkpoint(self, cur: Cursor) -> StoredCheckpoint | None:
        cur.execute("SELECT size, root, note, created_at FROM log_checkpoints ORDER BY size DESC LIMIT 1")
        row = cur.fetchone()
        return None if row is None else self._stored(row)

    def _stored(self, row: tuple) -> StoredCheckpoint:
        return StoredCheckpoint(Checkpoint(self.origin, int(row[0]), bytes(row[1])), row[2], row[3])

    def queued(self) -> int:
        with self.db.transaction() as cur:
            cur.execute("SELECT COUNT(*) FROM log_queue")
            return int(cur.fetchone()[0])
