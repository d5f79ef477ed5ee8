"""``RowStore``: batches of rows (features, labels) collected into a few large blocks."""

from __future__ import annotations

import torch

__all__ = ["RowStore"]


class RowStore:
    """Batches of rows appended into large pre-allocated blocks and handed out as one tensor by :meth:`consume`.

    Keeping each batch as its own tensor (as FastReID's evaluator does) leaves the features in many small
    allocations that the C allocator keeps in its heap once freed, so concatenating them raises the resident
    memory by a whole copy of the features. Here rows are copied into blocks as they arrive:

    * with ``first_block_rows`` (the test-set size, when known) the first block holds every row, and
      :meth:`consume` returns it without a copy;
    * otherwise, and for rows beyond that, blocks of ``block_bytes`` (32 MiB: glibc maps allocations of that
      size or more, so each one is returned to the system when freed) are concatenated by :meth:`consume`,
      which frees each block once copied and so needs at most one block of memory beyond the result.

    On the CPU, pages of a block that no row reached are never touched and cost no memory.

    Args:
        block_bytes: size of a block (a block holds at least the batch that opened it).
        first_block_rows: rows of the first block; 0 to size it like the others.
    """

    def __init__(self, block_bytes: int = 32 << 20, first_block_rows: int = 0):
        self.block_bytes = block_bytes
        self.first_block_rows = first_block_rows
        self.blocks: list[torch.Tensor] = []
        self.size = 0  # rows stored
        self.batches = 0  # calls to append
        self._filled = 0  # rows stored in the last block

    def append(self, rows: torch.Tensor) -> None:
        """Copies ``rows`` in.

        Args:
            rows: ``[B, ...]``; the trailing shape, dtype and device must be those of the first batch.
        """
        self.batches += 1
        start = 0
        while start < len(rows):
            if not self.blocks or self._filled == len(self.blocks[-1]):
                self._open_block(rows, len(rows) - start)
            block = self.blocks[-1]
            count = min(len(rows) - start, len(block) - self._filled)
            block[self._filled : self._filled + count] = rows[start : start + count]
            self._filled += count
            start += count
        self.size += len(rows)

    def _open_block(self, like: torch.Tensor, pending: int) -> None:
        if self.blocks or not self.first_block_rows:
            row_bytes = max(1, like[:1].numel() * like.element_size())
            capacity = self.block_bytes // row_bytes
        else:
            capacity = self.first_block_rows
        capacity = max(capacity, pending)
        self.blocks.append(torch.empty((capacity, *like.shape[1:]), dtype=like.dtype, device=like.device))
        self._filled = 0

    def consume(self) -> torch.Tensor:
        """All rows in order, as one tensor; the store is emptied.

        Returns:
            ``[size, ...]``: a view of the single block, or a new tensor the blocks were copied into (each
            block freed once copied).

        Raises:
            RuntimeError: if nothing was stored.
        """
        if not self.blocks:
            raise RuntimeError("no batch was stored")
        if len(self.blocks) == 1:
            out = self.blocks.pop()[: self.size]
        else:
            first = self.blocks[0]
            out = torch.empty((self.size, *first.shape[1:]), dtype=first.dtype, device=first.device)
            start = 0
            while self.blocks:
                block = self.blocks.pop(0)
                count = min(len(block), self.size - start)
                out[start : start + count] = block[:count]
                start += count
                del block
        self.size = self.batches = self._filled = 0
        return out
