"""Entry positions in their derived file: what was appended comes back, cuts cut, a reopen starts empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdp.errors import LedgerUnavailable
from pdp.ledger.positions import FILE, Positions


def test_positions_come_back_from_the_file_and_from_the_unwritten_batch(tmp_path: Path) -> None:
    where = Positions.create(tmp_path)
    for i in range(10):
        where.append(i // 4, 1000 * i)
    where.flush()
    where.append(7, 1 << 40)  # a batch whose write has not happened
    assert [where.get(i) for i in range(10)] == [(i // 4, 1000 * i) for i in range(10)]
    assert where.get(10) == (7, 1 << 40) and len(where) == 11
    assert (tmp_path / FILE).stat().st_size == 10 * 12
    with pytest.raises(LedgerUnavailable):
        where.get(11)
    where.truncate(6)
    assert len(where) == 6 and (tmp_path / FILE).stat().st_size == 6 * 12
    where.append(9, 9)
    where.flush()
    assert where.get(6) == (9, 9) and where.get(5) == (1, 5000)
    where.close()
    with pytest.raises(LedgerUnavailable, match="closed"):
        where.get(0)
    assert len(Positions.create(tmp_path)) == 0 and (tmp_path / FILE).stat().st_size == 0
