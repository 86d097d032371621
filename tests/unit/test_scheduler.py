from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aip.pipeline.scheduler import (
    ANY_WORKER,
    SCHEDULER_MODES,
    AdaptiveScheduler,
    PullScheduler,
    StaticScheduler,
    integer_weights,
    make_scheduler,
    weighted_cycle,
)

SEED_SERVICE_TIMES = {0: 0.02, 1: 0.05, 2: 0.1}  # the seed's ANE / GPU / CPU, seconds per frame

weight_lists = st.lists(st.integers(min_value=1, max_value=15), min_size=1, max_size=6)


def max_share_deviation(hints: list[int], weights: dict[int, int]) -> float:
    """Largest |frames given - ideal frames| over every prefix and backend."""
    total = sum(weights.values())
    counts = dict.fromkeys(weights, 0)
    worst = 0.0
    for n, hint in enumerate(hints, start=1):
        counts[hint] += 1
        worst = max(worst, *(abs(counts[b] - n * w / total) for b, w in weights.items()))
    return worst


def rounding_error(throughputs: dict[str, float], weights: dict[str, int]) -> float:
    """The documented metric, recomputed independently: 1 - min(capacity share / frame share)."""
    capacity, frames = sum(throughputs.values()), sum(weights.values())
    return 1 - min((throughputs[k] / capacity) / (weights[k] / frames) for k in weights)


# --- weighted_cycle ---------------------------------------------------------------------------


def test_seed_weights_give_an_11_frame_cycle_with_exact_counts() -> None:
    cycle = weighted_cycle({0: 7, 1: 3, 2: 1}, random.Random(0))
    assert len(cycle) == 11
    assert Counter(cycle) == {0: 7, 1: 3, 2: 1}


def test_cycle_interleaves_instead_of_grouping() -> None:
    cycle = weighted_cycle([7, 3, 1], random.Random(0))
    # Evenly spread: the slow backends are never handed two frames in a row.
    assert all(not (a == b != 0) for a, b in itertools.pairwise(cycle + cycle[:1]))
    assert max(len(list(run)) for hint, run in itertools.groupby(cycle) if hint == 0) <= 3


@given(weights=weight_lists, seed=st.integers(0, 2**32 - 1))
def test_cycle_counts_equal_weights_and_every_prefix_is_within_one_frame(
    weights: list[int], seed: int
) -> None:
    cycle = weighted_cycle(weights, random.Random(seed))
    assert Counter(cycle) == dict(enumerate(weights))
    tijdeman_bound = 1 - 1 / (2 * len(weights) - 2) if len(weights) > 1 else 0.0
    assert max_share_deviation(cycle * 3, dict(enumerate(weights))) <= tijdeman_bound + 1e-9


def test_sequence_and_mapping_weights_agree_and_zero_weights_are_left_out() -> None:
    from_sequence = weighted_cycle([2, 0, 1], random.Random(3))
    from_mapping = weighted_cycle({0: 2, 1: 0, 2: 1}, random.Random(3))
    assert from_sequence == from_mapping
    assert 1 not in from_sequence


def test_cycle_is_reproducible_with_a_seed_and_the_seed_breaks_ties() -> None:
    equal = [1] * 6
    assert weighted_cycle(equal, random.Random(42)) == weighted_cycle(equal, random.Random(42))
    assert weighted_cycle(equal, np.random.default_rng(42)) == weighted_cycle(
        equal, np.random.default_rng(42)
    )
    orders = {tuple(weighted_cycle(equal, random.Random(seed))) for seed in range(20)}
    assert len(orders) > 1
    assert all(sorted(order) == list(range(6)) for order in orders)


@pytest.mark.parametrize(
    "weights",
    [[], [0, 0], [-1, 2], [1.5, 1], {ANY_WORKER: 1}, {-1: 1}],
)
def test_weighted_cycle_rejects_invalid_weights(weights: list[float] | dict[int, int]) -> None:
    with pytest.raises(ValueError):
        weighted_cycle(weights, random.Random(0))  # type: ignore[arg-type]


# --- integer_weights ----------------------------------------------------------------------------


def test_exact_ratio_gives_the_smallest_weights_with_zero_error() -> None:
    assert integer_weights({"ane": 70.0, "gpu": 30.0, "cpu": 10.0}) == ({"ane": 7, "gpu": 3, "cpu": 1}, 0.0)
    assert integer_weights({0: 50.0, 1: 20.0, 2: 10.0}) == ({0: 5, 1: 2, 2: 1}, 0.0)
    assert integer_weights({"a": 3.0, "b": 3.0}) == ({"a": 1, "b": 1}, 0.0)
    assert integer_weights({"only": 12.5}) == ({"only": 1}, 0.0)


def test_measured_seed_rates_round_to_7_3_1_and_report_the_error() -> None:
    throughputs = {"ane": 70.1, "gpu": 29.8, "cpu": 10.2}
    weights, error = integer_weights(throughputs)
    assert weights == {"ane": 7, "gpu": 3, "cpu": 1}
    assert error == pytest.approx(rounding_error(throughputs, weights))
    assert 0 < error < 0.01


def test_awkward_ratio_meets_the_tolerance_with_a_small_cycle() -> None:
    throughputs = {"a": 1.0, "b": math.sqrt(2), "c": math.pi}
    weights, error = integer_weights(throughputs, tolerance=0.02)
    assert error <= 0.02
    assert sum(weights.values()) <= 64
    assert error == pytest.approx(rounding_error(throughputs, weights))
    assert weights["a"] < weights["b"] < weights["c"]


def test_lopsided_rates_keep_every_backend_and_report_the_large_error() -> None:
    weights, error = integer_weights({"fast": 1000.0, "slow": 1.0}, max_cycle=16)
    assert weights == {"fast": 15, "slow": 1}
    assert error == pytest.approx(1 - 16 / 1001)


def test_zero_throughput_backend_is_left_out() -> None:
    assert integer_weights({"a": 20.0, "dead": 0.0, "b": 10.0}) == ({"a": 2, "b": 1}, 0.0)


@pytest.mark.parametrize("throughputs", [{}, {"a": 0.0}, {"a": -1.0}, {"a": math.nan}, {"a": math.inf}])
def test_integer_weights_rejects_unusable_throughputs(throughputs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        integer_weights(throughputs)


def test_integer_weights_rejects_a_cycle_cap_below_the_backend_count() -> None:
    with pytest.raises(ValueError, match="max_cycle"):
        integer_weights({"a": 1.0, "b": 1.0, "c": 1.0}, max_cycle=2)


@settings(max_examples=150)
@given(
    throughputs=st.lists(st.floats(min_value=0.5, max_value=200.0), min_size=1, max_size=3),
    max_cycle=st.integers(min_value=3, max_value=12),
    tolerance=st.sampled_from([0.0, 0.02, 0.1]),
)
def test_integer_weights_matches_brute_force(
    throughputs: list[float], max_cycle: int, tolerance: float
) -> None:
    rates = dict(enumerate(throughputs))
    weights, error = integer_weights(rates, max_cycle=max_cycle, tolerance=tolerance)
    assert all(w >= 1 for w in weights.values())

    def best_error(length: int) -> float:
        """Best error over every split of ``length`` frames into positive weights."""
        splits = (
            [b - a for a, b in itertools.pairwise((0, *cuts, length))]
            for cuts in itertools.combinations(range(1, length), len(rates) - 1)
        )
        named_rates = {str(k): v for k, v in rates.items()}
        return min(rounding_error(named_rates, {str(k): w for k, w in enumerate(split)}) for split in splits)

    lengths = range(len(rates), max_cycle + 1)
    chosen = sum(weights.values())
    assert error == pytest.approx(best_error(chosen), abs=1e-12)
    if error <= tolerance:  # the smallest cycle that meets the tolerance
        assert all(best_error(length) > tolerance for length in lengths if length < chosen)
    else:  # nothing meets it: the most accurate cycle
        assert all(best_error(length) >= error - 1e-12 for length in lengths)


# --- StaticScheduler --------------------------------------------------------------------------


def test_static_walks_its_cycle_repeatedly() -> None:
    scheduler = StaticScheduler({0: 7, 1: 3, 2: 1}, seed=1)
    hints = [scheduler.next_hint(frame_id) for frame_id in range(33)]
    assert hints == list(scheduler.cycle) * 3
    assert scheduler.weights == {0: 7, 1: 3, 2: 1}


@given(weights=weight_lists, seed=st.integers(0, 1000), frames=st.integers(1, 200))
def test_static_shares_over_any_number_of_frames_are_within_one_frame(
    weights: list[int], seed: int, frames: int
) -> None:
    scheduler = StaticScheduler(weights, seed)
    hints = [scheduler.next_hint(i) for i in range(frames)]
    assert max_share_deviation(hints, dict(enumerate(weights))) <= 1 + 1e-9


def test_static_is_reproducible_with_a_seed() -> None:
    def hints(seed: int) -> list[int]:
        scheduler = StaticScheduler([1, 1, 1, 1], seed)
        return [scheduler.next_hint(i) for i in range(12)]

    assert hints(9) == hints(9)


def test_static_ignores_service_times() -> None:
    scheduler = StaticScheduler([5, 2, 1])
    for _ in range(100):
        scheduler.observe(0, 1.0)
    assert scheduler.weights == {0: 5, 1: 2, 2: 1}
    assert scheduler.rebuilds == 0


def test_static_dead_backend_leaves_the_cycle_at_once() -> None:
    scheduler = StaticScheduler([5, 2, 1])
    scheduler.next_hint(0)
    scheduler.mark_dead(1)
    assert scheduler.weights == {0: 5, 2: 1}
    assert scheduler.rebuilds == 1
    hints = [scheduler.next_hint(i) for i in range(60)]
    assert Counter(hints) == {0: 50, 2: 10}
    scheduler.mark_dead(1)  # idempotent
    assert scheduler.rebuilds == 1


def test_static_with_every_backend_dead_says_so() -> None:
    scheduler = StaticScheduler([1, 1])
    scheduler.mark_dead(0)
    scheduler.mark_dead(1)
    assert scheduler.weights == {}
    with pytest.raises(RuntimeError, match="no live backend"):
        scheduler.next_hint(0)


def test_marking_an_unknown_backend_dead_is_an_error() -> None:
    with pytest.raises(KeyError, match="unknown backend 7"):
        StaticScheduler([1, 1]).mark_dead(7)


def test_cycle_scheduler_needs_a_positive_weight() -> None:
    with pytest.raises(ValueError):
        StaticScheduler([0, 0])


# --- AdaptiveScheduler ----------------------------------------------------------------------


def run_adaptive(
    scheduler: AdaptiveScheduler,
    frames: int,
    service_time: dict[int, float],
    rng: random.Random,
    jitter: float = 0.0,
) -> list[int]:
    hints = []
    for frame_id in range(frames):
        backend = scheduler.next_hint(frame_id)
        hints.append(backend)
        scheduler.observe(backend, service_time[backend] * (1 + rng.uniform(-jitter, jitter)))
    return hints


def test_adaptive_does_not_rebuild_on_small_noise() -> None:
    scheduler = AdaptiveScheduler([5, 2, 1], seed=0)
    run_adaptive(scheduler, 3000, SEED_SERVICE_TIMES, random.Random(1), jitter=0.1)
    assert scheduler.rebuilds == 0
    assert scheduler.weights == {0: 5, 1: 2, 2: 1}


def test_adaptive_reweights_when_a_backend_slows_down_and_then_settles() -> None:
    scheduler = AdaptiveScheduler([5, 2, 1], seed=0)
    rng = random.Random(2)
    run_adaptive(scheduler, 400, SEED_SERVICE_TIMES, rng, jitter=0.05)
    assert scheduler.rebuilds == 0
    slowed = {**SEED_SERVICE_TIMES, 0: 3 * SEED_SERVICE_TIMES[0]}  # ANE 50 -> 16.7 fps
    run_adaptive(scheduler, 800, slowed, rng, jitter=0.05)
    assert scheduler.rebuilds >= 1
    weights = scheduler.weights
    assert weights[0] / sum(weights.values()) < 0.45  # was 5/8
    # Stale weights may lag the rates by up to the drift threshold (plus rounding), no more.
    slowed_rates = {str(b): 1 / t for b, t in slowed.items()}
    assert rounding_error(slowed_rates, {str(b): w for b, w in weights.items()}) <= 0.1 + 0.02
    settled = scheduler.rebuilds
    hints = run_adaptive(scheduler, 1400, slowed, rng, jitter=0.05)
    assert scheduler.rebuilds == settled
    # These hints start mid-cycle: a window of the cycle is within two frames (two prefix errors).
    assert max_share_deviation(hints, weights) < 2


def test_adaptive_waits_for_min_samples_of_every_backend() -> None:
    scheduler = AdaptiveScheduler([1, 1], min_samples=5)
    for _ in range(4):
        scheduler.observe(0, 0.01)
        scheduler.observe(1, 0.1)
    assert scheduler.rebuilds == 0
    scheduler.observe(0, 0.01)
    scheduler.observe(1, 0.1)
    assert scheduler.weights == {0: 10, 1: 1}
    assert scheduler.rebuilds == 1


def test_adaptive_smooths_service_times_with_an_ewma() -> None:
    scheduler = AdaptiveScheduler([1, 1], alpha=0.25)
    scheduler.observe(0, 0.1)
    assert scheduler.service_rates == {0: pytest.approx(10.0)}
    scheduler.observe(0, 0.02)
    assert scheduler.service_rates[0] == pytest.approx(1 / (0.1 + 0.25 * (0.02 - 0.1)))


def test_adaptive_dead_backend_leaves_at_once_and_for_good() -> None:
    scheduler = AdaptiveScheduler([5, 2, 1])
    scheduler.mark_dead(2)
    assert scheduler.rebuilds == 1
    assert scheduler.weights == {0: 5, 1: 2}
    scheduler.observe(2, 0.1)  # a late result from the dead worker
    assert 2 not in scheduler.weights
    assert 2 not in {scheduler.next_hint(i) for i in range(70)}


@pytest.mark.parametrize(
    "kwargs", [{"alpha": 0.0}, {"alpha": 1.5}, {"drift_threshold": 0.0}, {"min_samples": 0}]
)
def test_adaptive_rejects_bad_tuning(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AdaptiveScheduler([1, 1], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("service_time", [0.0, -0.1, math.nan, math.inf])
def test_adaptive_rejects_bad_service_times(service_time: float) -> None:
    with pytest.raises(ValueError):
        AdaptiveScheduler([1, 1]).observe(0, service_time)


def test_adaptive_rejects_unknown_backends() -> None:
    with pytest.raises(KeyError):
        AdaptiveScheduler([1, 1]).observe(5, 0.1)


# --- PullScheduler and the factory ---------------------------------------------------------


def test_pull_hints_any_worker() -> None:
    assert ANY_WORKER == 0xFFFFFFFF
    scheduler = PullScheduler([5, 2, 1])
    assert {scheduler.next_hint(i) for i in range(20)} == {ANY_WORKER}
    scheduler.observe(0, 0.5)
    scheduler.mark_dead(1)
    assert scheduler.weights == {0: 5, 2: 1}
    assert scheduler.next_hint(20) == ANY_WORKER
    assert PullScheduler().weights == {}


@pytest.mark.parametrize(
    ("mode", "kind"), [("static", StaticScheduler), ("adaptive", AdaptiveScheduler), ("pull", PullScheduler)]
)
def test_make_scheduler_builds_each_mode(mode: str, kind: type) -> None:
    scheduler = make_scheduler(mode, {0: 7, 1: 3, 2: 1}, seed=4)
    assert type(scheduler) is kind
    assert scheduler.weights == {0: 7, 1: 3, 2: 1}
    assert mode in SCHEDULER_MODES


def test_make_scheduler_passes_adaptive_tuning() -> None:
    scheduler = make_scheduler("adaptive", [1, 1], alpha=0.5, drift_threshold=0.3, min_samples=2)
    assert isinstance(scheduler, AdaptiveScheduler)
    assert (scheduler.alpha, scheduler.drift_threshold, scheduler.min_samples) == (0.5, 0.3, 2)


def test_make_scheduler_lists_the_modes_for_an_unknown_one() -> None:
    with pytest.raises(ValueError, match=r"'dynamic'.*static, adaptive, pull"):
        make_scheduler("dynamic", [1])


def test_adaptive_measures_a_revived_backend_again() -> None:
    """A restarted worker is not trusted at its old speed: its old samples go,
    it runs at the weight it is revived with until it has fresh ones."""
    scheduler = AdaptiveScheduler({0: 1, 1: 1}, min_samples=3)
    for _ in range(10):
        scheduler.observe(0, 0.01)
        scheduler.observe(1, 0.01)
    scheduler.mark_dead(1)
    scheduler.revive(1, 1)
    assert 1 not in scheduler.service_rates and scheduler.weights == {0: 1, 1: 1}
    for _ in range(3):
        scheduler.observe(1, 0.04)  # it came back 4x slower
    assert scheduler.service_rates[1] == pytest.approx(25.0)
    weights = scheduler.weights
    assert weights[0] > weights[1]
