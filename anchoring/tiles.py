"""Layout of stored perfect nodes in tiles: pure arithmetic, no I/O.

Perfect nodes are stored in tiles of height ``TILE_HEIGHT``, in the spirit of C2SP tlog-tiles but
keeping every row of a tile, not only the bottom one, so that any node is one slice of one stored
blob and a proof never rehashes a tile.  Tile ``(tile_level, tile_index)`` holds, for each row
``r`` in ``0 .. TILE_HEIGHT-1``, the nodes at tree level ``tile_level * TILE_HEIGHT + r`` whose
bottom-row descendants fall in ``[tile_index * TILE_WIDTH, (tile_index + 1) * TILE_WIDTH)``.

A tile at the right edge of the tree is partial: its *width* is how many bottom-row nodes it has,
and row ``r`` then holds ``width >> r`` nodes (exactly the complete ones).  A blob is the rows
concatenated, bottom row first.  A node's bytes never change once written, so any stored prefix of
a tile stays valid as the tree grows.
"""

from __future__ import annotations

from .merkle import HASH_SIZE

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT

TileId = tuple[int, int]  # (tile_level, tile_index)


def tile_of(level: int, index: int) -> tuple[TileId, int, int]:
    """The tile holding perfect node (level, index), the node's row in it and its position in the row."""
    tile_level, row = divmod(level, TILE_HEIGHT)
    shift = TILE_HEIGHT - row
    return (tile_level, index >> shift), row, index & ((1 << shift) - 1)


def row_offset(width: int, row: int) -> int:
    """Byte offset of ``row`` in the blob of a tile of ``width``."""
    return ROW_OFFSETS[width][row]


#: ROW_OFFSETS[width][row]: precomputed because proofs look nodes up on their hot path.
ROW_OFFSETS = tuple(
    tuple(HASH_SIZE * sum(width >> r for r in range(row)) for row in range(TILE_HEIGHT + 1))
    for width in range(TILE_WIDTH + 1)
)


def blob_size(width: int) -> int:
    return row_offset(width, TILE_HEIGHT)


def node_in_blob(blob: bytes, width: int, row: int, position: int) -> bytes | None:
    """The node's hash, or None if the tile (at this width) does not hold it yet."""
    if position >= width >> row:
        return None
    start = row_offset(width, row) + HASH_SIZE * position
    return bytes(blob[start : start + HASH_SIZE])


def tile_width_at(tile_level: int, tile_index: int, size: int) -> int:
    """Bottom-row width of a tile in a tree of ``size`` leaves (0 when the tile is not started)."""
    complete = size >> (tile_level * TILE_HEIGHT)
    return max(0, min(TILE_WIDTH, complete - tile_index * TILE_WIDTH))


def build_blob(rows: list[bytes], width: int) -> bytes:
    """Concatenate rows (each already ``width >> r`` hashes long) into a blob, checking the layout."""
    for r, row in enumerate(rows):
        if len(row) != HASH_SIZE * (width >> r):
            raise ValueError(f"tile row {r}: expected {width >> r} hashes, found {len(row) // HASH_SIZE}")
    return b"".join(rows)


def split_rows(blob: bytes, width: int) -> list[bytes]:
    """The rows of a blob, bottom first."""
    rows = []
    for r in range(TILE_HEIGHT):
        start = row_offset(width, r)
        rows.append(bytes(blob[start : start + HASH_SIZE * (width >> r)]))
    return rows
