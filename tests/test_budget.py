"""Reads are sized by what entries weigh and fire: bounded memory and bounded commits."""

from __future__ import annotations

from streamcalc.budget import (
    BATCH_SECONDS,
    BEHIND_S,
    BEHIND_SHARE,
    COMMIT_VALUES_BUDGET,
    READ_BYTES_BUDGET,
    Budget,
)


def entries(n: int, value_bytes: int) -> list[tuple[bytes, list[bytes] | None]]:
    return [(f"{i}-0".encode(), [b"X", b"1" * value_bytes]) for i in range(n)]


def test_reads_start_small_and_grow_fourfold_up_to_the_batch() -> None:
    budget = Budget(500)
    sizes = []
    for _ in range(6):
        sizes.append(budget.size())
        budget.weigh(entries(budget.size(), 10))
    assert sizes == [1, 4, 16, 64, 256, 500]


def test_heavy_entries_are_read_a_few_at_a_time() -> None:
    budget = Budget(500)
    budget.weigh(entries(1, 6 * 1024 * 1024))  # the first read brings one 6 MiB entry
    assert budget.size() == READ_BYTES_BUDGET // (6 * 1024 * 1024 + 1) == 2
    for _ in range(20):  # lighter entries again: the size comes back, slowly
        budget.weigh(entries(budget.size(), 100))
    assert budget.size() == 500


def test_entries_that_fire_many_values_make_small_batches() -> None:
    budget = Budget(500)
    for _ in range(5):
        budget.weigh(entries(4, 10))
    budget.fired(100 * 8, 8)
    assert budget.size() == COMMIT_VALUES_BUDGET // 100


def stamped(n: int, ms: int) -> list[tuple[bytes, list[bytes] | None]]:
    return [(f"{ms}-{i}".encode(), [b"X", b"1"]) for i in range(n)]


def test_a_worker_that_keeps_up_prepares_a_batch_in_about_batch_seconds() -> None:
    budget = Budget(500)
    now = 1_700_000_000.0
    for _ in range(5):  # fresh entries: the worker keeps up
        budget.weigh(stamped(4, int(now * 1000)), now=now)
    budget.took(8 * 50e-6, 8)  # 50 µs of CPU an entry
    assert budget.size() == round(BATCH_SECONDS / 50e-6) == 40


def test_a_worker_behind_may_take_longer_batches() -> None:
    budget = Budget(500)
    now = 1_700_000_000.0
    budget.took(8 * 50e-6, 8)
    for _ in range(5):
        budget.weigh(stamped(4, int(now * 1000) - 40), now=now)  # waited 40 ms
    assert abs(budget.size() - BEHIND_SHARE * 0.040 / 50e-6) <= 1  # 200, give or take rounding
    budget.weigh(stamped(4, int(now * 1000) - 10_000), now=now)  # 10 s behind: --batch
    assert budget.size() == 500
    budget.weigh(stamped(4, int(now * 1000) + 5_000), now=now)  # Redis's clock ahead
    assert budget.size() == 40


def test_behind_is_a_full_read_or_an_old_entry() -> None:
    budget = Budget(500)
    now = 1_700_000_000.0
    budget.weigh(stamped(4, int(now * 1000) - 1), now=now)  # waited 1 ms
    assert not budget.behind(4, 40)
    assert budget.behind(40, 40)  # the read brought all it asked for: there may be more
    budget.weigh(stamped(4, int(now * 1000) - round(BEHIND_S * 1000) - 5), now=now)
    assert budget.behind(4, 40)
