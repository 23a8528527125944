"""Water-filling of a router round between boxes and their partitions."""

from __future__ import annotations

from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from processors.router.fairness import QUANTUM, fair_shares, in_round, water_fill


def test_a_quiet_box_gets_everything_it_has_and_the_flooder_the_rest() -> None:
    assert water_fill({"flood": 100_000, "quiet": 3}, 5000) == {"flood": 4997, "quiet": 3}


def test_equal_backlogs_split_evenly() -> None:
    shares = water_fill({"a": 10_000, "b": 10_000, "c": 10_000}, 3000)
    assert shares == {"a": 1000, "b": 1000, "c": 1000}


def test_a_box_alone_gets_the_whole_round() -> None:
    assert water_fill({"a": 50_000, "idle": 0}, 5000) == {"a": 5000}


def test_more_boxes_than_budget_each_still_get_one() -> None:
    shares = water_fill({f"b{i}": 5 for i in range(10)}, 4)
    assert set(shares.values()) == {1}


def test_shares_split_by_box_first_then_by_partition() -> None:
    # The flooder has three busy partitions; a quiet box one: the box, not the partition,
    # is the unit of fairness.
    flood = {TopicPartition("ns.box.flood.outbox", p): 10_000 for p in range(3)}
    quiet = {TopicPartition("ns.box.quiet.outbox", 0): 10_000}
    shares = fair_shares({**flood, **quiet}, 1200)
    assert shares[TopicPartition("ns.box.quiet.outbox", 0)] == 600
    assert sorted(shares[tp] for tp in flood) == [200, 200, 200]


@given(st.dictionaries(st.text(min_size=1, max_size=3), st.integers(0, 10_000), max_size=30),
       st.integers(0, 20_000))
def test_water_fill_never_overspends_nor_starves(demands: dict[str, int], budget: int) -> None:
    shares = water_fill(demands, budget)
    wanting = {k for k, d in demands.items() if d > 0}
    assert set(shares) == wanting
    assert all(1 <= shares[k] <= demands[k] for k in wanting)
    # Spends the whole budget when there is demand for it; overspends only to give each one.
    if budget >= len(wanting):
        assert sum(shares.values()) == min(budget, sum(demands.values()))
    else:
        assert sum(shares.values()) == len(wanting)
    # Nobody gets more than a claimant that wanted more but was cut (max-min fair).
    cut = [shares[k] for k in wanting if shares[k] < demands[k]]
    if cut:
        assert max(shares.values()) <= min(cut) + 1


def test_busy_boxes_take_turns_when_a_round_has_no_room_for_a_slice_of_each() -> None:
    demands = {f"box{n:04d}": 500 for n in range(2000)} | {"quiet": 3}
    chosen, turns = in_round(demands, 5000, [])
    # Every quiet box, and as many busy ones as get QUANTUM of what is left.
    assert "quiet" in chosen and len(chosen) == 1 + (5000 - 3) // QUANTUM
    served: set[str] = set()
    rounds = 0
    while len(served) < 2000:
        chosen, turns = in_round(demands, 5000, turns)
        assert "quiet" in chosen  # a quiet box never waits for its turn
        served |= chosen - {"quiet"}
        rounds += 1
    assert rounds <= 2000 // ((5000 - 3) // QUANTUM) + 1  # each busy box's turn comes


def test_a_busy_box_with_less_than_a_quantum_waiting_claims_only_what_it_has() -> None:
    # 1,990 boxes with 25 records each: a round holds 199 of them (4,975 records), not the
    # 78 that slices of QUANTUM would (1,950 records).
    demands = {f"box{n:04d}": 25 for n in range(1990)} | {"quiet": 3}
    chosen, turns = in_round(demands, 5000, [])
    assert len(chosen) == 1 + (5000 - 3) // 25
    shares = fair_shares({TopicPartition(t, 0): demands[t] for t in chosen}, 5000)
    assert 4975 <= sum(shares.values()) <= 5000
    served = chosen - {"quiet"}
    rounds = 1
    while len(served) < 1990:
        chosen, turns = in_round(demands, 5000, turns)
        assert not served & (chosen - {"quiet"})  # turns: nobody twice before everyone once
        served |= chosen - {"quiet"}
        rounds += 1
    assert rounds == 10


def test_a_round_always_serves_one_busy_box() -> None:
    chosen, turns = in_round({"big": 10_000, "other": 9_000}, 10, [])
    assert chosen == {"big"} and turns == ["other", "big"]


def test_all_busy_boxes_are_in_a_round_that_has_room_for_them() -> None:
    chosen, _ = in_round({"a": 10_000, "b": 10_000, "c": 17, "d": 4}, 3000, [])
    assert chosen == {"a", "b", "c", "d"}
