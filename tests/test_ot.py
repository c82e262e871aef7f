"""Discrete OT between uniform clouds: exact assignment against brute force, Sinkhorn, paired."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from scipy.optimize import linear_sum_assignment

from lightning_complexity.functional.ot import (
    _certified_assignment,
    _screened_assignment,
    exact_assignment,
    exact_ot_cost,
    paired_cost,
    sinkhorn_ot,
    sinkhorn_ot_cost,
    squared_distances,
)


# Tiny tensors on a small shared CPU: one intra-op thread (see conftest.single_torch_thread).
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def brute_force_cost(a: torch.Tensor, b: torch.Tensor) -> float:
    """(1/n) min over all n! permutations of Σ ‖a_i − b_σ(i)‖², one problem (n, d)."""
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    n = a.shape[0]
    best = min(sum(cost[i, p[i]].item() for i in range(n)) for p in itertools.permutations(range(n)))
    return best / n


@pytest.mark.parametrize("d", [1, 2, 3, 7])
@pytest.mark.parametrize("n", [2, 5, 6])
def test_exact_cost_equals_brute_force_permutation_search(n: int, d: int) -> None:
    g = torch.Generator().manual_seed(100 * n + d)
    a = torch.randn(3, n, d, generator=g, dtype=torch.float64)
    b = torch.randn(3, n, d, generator=g, dtype=torch.float64) * 2 + 0.5
    got = exact_ot_cost(a, b)
    expected = torch.tensor([brute_force_cost(a[k], b[k]) for k in range(3)], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_exact_assignment_is_a_permutation_that_attains_the_cost() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 50, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4, 50, 3, generator=g, dtype=torch.float64)
    permutation = exact_assignment(a, b)
    assert permutation.shape == (4, 50) and permutation.dtype == torch.long
    assert torch.equal(permutation.sort(dim=-1).values, torch.arange(50).expand(4, 50))
    matched = torch.stack([b[k, permutation[k]] for k in range(4)])
    torch.testing.assert_close(exact_ot_cost(a, b), (a - matched).square().sum(-1).mean(-1))


def test_certificate_recognises_nearest_neighbour_permutations() -> None:
    # Row minima on a permutation → that permutation.
    by_rows = torch.tensor([[[5.0, 0.0, 9.0], [9.0, 9.0, 1.0], [2.0, 8.0, 8.0]]], dtype=torch.float64)
    permutation, certified = _certified_assignment(by_rows)
    assert certified.tolist() == [True] and permutation.tolist() == [[1, 2, 0]]
    # Row minima (1, 2, 2) collide, column minima (rows 2, 0, 1) do not → σ = [1, 2, 0], cost 7,
    # the brute-force optimum of this matrix.
    by_columns = torch.tensor([[[5.0, 1.0, 3.0], [6.0, 7.0, 2.0], [4.0, 8.0, 2.5]]], dtype=torch.float64)
    permutation, certified = _certified_assignment(by_columns)
    assert certified.tolist() == [True] and permutation.tolist() == [[1, 2, 0]]
    brute = min(sum(by_columns[0, i, p[i]].item() for i in range(3)) for p in itertools.permutations(range(3)))
    assert brute == 7.0
    neither = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]], dtype=torch.float64)
    assert _certified_assignment(neither)[1].tolist() == [False]


@pytest.mark.parametrize("noise", [0.05, 0.5, 3.0])
def test_exact_assignment_cost_equals_scipy_whatever_the_path(noise: float) -> None:
    # Small noise: every site is certified on the device; large noise: all go to the solver.
    g = torch.Generator().manual_seed(int(noise * 100))
    a = torch.randn(4, 200, 24, generator=g, dtype=torch.float64)
    b = a + noise * torch.randn(4, 200, 24, generator=g, dtype=torch.float64)
    cost = squared_distances(a, b)
    expected = []
    for k in range(4):
        rows, cols = linear_sum_assignment(cost[k].numpy())
        expected.append(cost[k].numpy()[rows, cols].mean())
    torch.testing.assert_close(exact_ot_cost(a, b), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    certified = _certified_assignment(cost)[1]
    assert bool(certified.all()) if noise == 0.05 else True
    assert not bool(certified.any()) if noise == 3.0 else True


def test_float32_screen_refuses_near_ties() -> None:
    # Two targets 1e-9 apart: float32 cannot tell which is nearer, so the screen must not certify,
    # and the float64 path must still return the exact optimum.
    g = torch.Generator().manual_seed(9)
    a = torch.randn(1, 64, 32, generator=g, dtype=torch.float64)
    b = a.clone()
    b[0, 1] = b[0, 0] + 1e-9  # points 0 and 1 of b nearly coincide ...
    a[0, 1] = a[0, 0] + 2e-9  # ... and so do points 0 and 1 of a
    assert _screened_assignment(a, b)[1].tolist() == [False]
    assert _screened_assignment(a, b)[2].tolist() == [False]  # the float64 certificate still gets its try
    cost = squared_distances(a, b)[0].numpy()
    _, cols = linear_sum_assignment(cost)
    scipy_cost = (a[0] - b[0, torch.from_numpy(cols)]).square().sum(-1).mean().item()
    # Equal up to the expanded matrix's cancellation (~1e-15 here); ours is the identity, 5e-19.
    assert 0.0 <= exact_ot_cost(a, b).item() <= scipy_cost + 1e-15


def test_shared_sure_neighbours_skip_the_float64_certificate_and_the_solver_stays_exact() -> None:
    # Every point of b sits in one of 3 tight clusters: many rows of a share their nearest
    # neighbour beyond doubt, so the nearest neighbours are no permutation in any precision. The
    # screen says so ("hopeless"), the float64 certificate is skipped, and scipy still decides.
    g = torch.Generator().manual_seed(12)
    a = torch.randn(2, 200, 8, generator=g, dtype=torch.float64)
    centres = 10 * torch.randn(3, 8, generator=g, dtype=torch.float64)
    b = centres[torch.arange(200) % 3] + 0.01 * torch.randn(2, 200, 8, generator=g, dtype=torch.float64)
    permutation, certified, hopeless = _screened_assignment(a, b)
    assert hopeless.tolist() == [True, True] and not certified.any()
    for k in range(2):
        _, cols = linear_sum_assignment(squared_distances(a[k : k + 1], b[k : k + 1])[0].numpy())
        scipy_cost = (a[k] - b[k, torch.from_numpy(cols)]).square().sum(-1).mean().item()
        assert exact_ot_cost(a[k : k + 1], b[k : k + 1]).item() == pytest.approx(scipy_cost, rel=1e-12)
    # Near-identity clouds: certified outright, nothing hopeless.
    near = a + 1e-3 * torch.randn(2, 200, 8, generator=g, dtype=torch.float64)
    _, certified, hopeless = _screened_assignment(a, near)
    assert certified.all() and not hopeless.any()


def test_the_first_look_at_every_8th_row_finds_hopeless_problems_and_leaves_the_others_to_the_full_screen() -> None:
    # 512 rows (the first look runs from 256 on): problem 0 clusters b (hopeless, seen in the
    # sampled rows alone), problem 1 is near-identity (certified by the full screen), problem 2 is
    # neither (uncertified, still hopeful: the float64 certificate gets its try).
    import lightning_complexity.functional.ot as ot_module

    g = torch.Generator().manual_seed(21)
    a = torch.randn(3, 512, 8, generator=g, dtype=torch.float64)
    centres = 10 * torch.randn(3, 8, generator=g, dtype=torch.float64)
    b = torch.stack([
        centres[torch.arange(512) % 3] + 0.01 * torch.randn(512, 8, generator=g, dtype=torch.float64),
        a[1] + 1e-3 * torch.randn(512, 8, generator=g, dtype=torch.float64),
        a[2] + 0.5 * torch.randn(512, 8, generator=g, dtype=torch.float64),
    ])
    permutation, certified, hopeless = _screened_assignment(a, b)
    full = _screened_assignment(a, b, pre_screened=True)  # the same screen without the first look
    assert hopeless.tolist() == full[2].tolist() and certified.tolist() == full[1].tolist()
    assert hopeless[0] and certified[1] and not hopeless[1]
    assert torch.equal(permutation[1], torch.arange(512))
    assert torch.equal(permutation[1:][certified[1:]], full[0][1:][certified[1:]])
    # The hopeless problem alone costs one float32 matmul of its sampled rows, not the full one.
    rows_multiplied = []
    original = torch.baddbmm

    def counting(start, left, right, **kwargs):
        rows_multiplied.append(left.shape[-2])
        return original(start, left, right, **kwargs)

    ot_module.torch.baddbmm = counting
    try:
        assert _screened_assignment(a[:1], b[:1])[2].item()
    finally:
        ot_module.torch.baddbmm = original
    assert rows_multiplied == [512 // ot_module._PRE_SCREEN_STRIDE]
    for k in range(3):
        _, cols = linear_sum_assignment(squared_distances(a[k : k + 1], b[k : k + 1])[0].numpy())
        scipy_cost = (a[k] - b[k, torch.from_numpy(cols)]).square().sum(-1).mean().item()
        assert exact_ot_cost(a[k : k + 1], b[k : k + 1]).item() == pytest.approx(scipy_cost, rel=1e-12)
    torch.testing.assert_close(exact_ot_cost(a, b), torch.cat([exact_ot_cost(a[k : k + 1], b[k : k + 1]) for k in range(3)]), rtol=0, atol=0)


def test_float32_screen_is_off_under_reduced_matmul_precision() -> None:
    g = torch.Generator().manual_seed(10)
    a = torch.randn(2, 64, 256, generator=g, dtype=torch.float64)
    b = a + 0.01 * torch.randn(2, 64, 256, generator=g, dtype=torch.float64)
    assert _screened_assignment(a, b)[1].all()
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")  # bf16 allowed: the bound is useless, no screen
        assert not _screened_assignment(a, b)[1].any()
        torch.testing.assert_close(exact_ot_cost(a, b), paired_cost(a, b))  # float64 path, same answer
    finally:
        torch.set_float32_matmul_precision(previous)


def test_one_dimensional_sort_matches_assignment_solver() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(2, 300, 1, generator=g, dtype=torch.float64)
    b = torch.randn(2, 300, 1, generator=g, dtype=torch.float64).exp()
    sorted_cost = exact_ot_cost(a, b)
    # The same problem embedded in 2-D (a zero second coordinate) goes through the solver.
    padded = exact_ot_cost(torch.cat([a, torch.zeros_like(a)], -1), torch.cat([b, torch.zeros_like(b)], -1))
    torch.testing.assert_close(sorted_cost, padded, rtol=1e-12, atol=1e-12)


def test_threads_and_chunks_do_not_change_the_result() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(5, 64, 4, generator=g, dtype=torch.float64)
    b = torch.randn(5, 64, 4, generator=g, dtype=torch.float64)
    reference = exact_ot_cost(a, b, num_threads=1)
    chunked = exact_ot_cost(a, b, num_threads=3, max_chunk_bytes=8 * 64 * 64 * 2)  # 2 problems per chunk
    torch.testing.assert_close(chunked, reference, rtol=0, atol=0)


def test_paired_cost_is_an_upper_bound_and_exact_for_an_ordered_match() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, 40, 2, generator=g, dtype=torch.float64)
    b = torch.randn(3, 40, 2, generator=g, dtype=torch.float64)
    assert bool((paired_cost(a, b) >= exact_ot_cost(a, b) - 1e-12).all())
    # A small perturbation of the same points: identity is optimal, both agree.
    torch.testing.assert_close(paired_cost(a, a + 1e-3), exact_ot_cost(a, a + 1e-3))


def test_squared_distances_match_cdist() -> None:
    g = torch.Generator().manual_seed(4)
    a = torch.randn(2, 30, 5, generator=g, dtype=torch.float64)
    b = torch.randn(2, 20, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(squared_distances(a, b), torch.cdist(a, b) ** 2, rtol=1e-10, atol=1e-10)


def test_sinkhorn_converges_to_exact_on_well_separated_clouds() -> None:
    # High-dimensional clouds: the optimal match is far cheaper than any other, so the final plan's
    # argmax is the optimal permutation and its cost is the exact cost.
    g = torch.Generator().manual_seed(5)
    a = torch.randn(3, 128, 64, generator=g, dtype=torch.float64)
    b = a[:, torch.randperm(128, generator=g)] + 0.1 * torch.randn(3, 128, 64, generator=g, dtype=torch.float64)
    torch.testing.assert_close(sinkhorn_ot_cost(a, b), exact_ot_cost(a, b), rtol=1e-9, atol=1e-12)


def test_sinkhorn_certificate_brackets_the_exact_cost_in_low_dimension() -> None:
    # In 2-D many matches nearly tie (the old fixed ε = 1 % of the mean cost was 1e-2 off here):
    # the annealed solver closes its gap, and the bounds hold around the assignment solver's cost.
    g = torch.Generator().manual_seed(6)
    a = torch.randn(4, 128, 2, generator=g, dtype=torch.float64)
    b = torch.randn(4, 128, 2, generator=g, dtype=torch.float64)
    exact = exact_ot_cost(a, b)
    result = sinkhorn_ot(a, b)
    assert bool(result.certified.all())
    assert bool((result.lower_bound <= exact * (1 + 1e-12)).all())
    assert bool((result.cost >= exact * (1 - 1e-12)).all())
    assert bool(((result.cost - exact) <= 2e-4 * result.cost).all())
    assert bool((result.iterations > 0).all())


def test_sinkhorn_stopped_early_is_not_certified_but_still_bounds_the_cost() -> None:
    g = torch.Generator().manual_seed(8)
    a = torch.randn(2, 96, 2, generator=g, dtype=torch.float64)
    b = torch.randn(2, 96, 2, generator=g, dtype=torch.float64)
    exact = exact_ot_cost(a, b)
    result = sinkhorn_ot(a, b, max_iterations=20)
    assert not bool(result.certified.any())
    assert bool((result.iterations <= 20).all())
    assert bool((result.lower_bound <= exact * (1 + 1e-12)).all()) and bool((result.cost >= exact * (1 - 1e-12)).all())
    assert bool((result.cost - result.lower_bound > 2e-4 * result.cost).all())


def test_sinkhorn_chunks_do_not_change_the_result() -> None:
    g = torch.Generator().manual_seed(7)
    a = torch.randn(3, 32, 3, generator=g, dtype=torch.float64)
    b = torch.randn(3, 32, 3, generator=g, dtype=torch.float64)
    whole = sinkhorn_ot(a, b)
    pieces = sinkhorn_ot(a, b, max_chunk_bytes=4 * 8 * 32 * 32)  # one problem per chunk
    # A chunk iterates until all its problems converge, so the counts differ; the certified costs do not.
    exact = exact_ot_cost(a, b)
    assert bool(whole.certified.all()) and bool(pieces.certified.all())
    for result in (whole, pieces):
        assert bool(((result.cost - exact).abs() <= 2e-4 * exact).all())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"gap": 0.0}, r"`gap` must be a finite number > 0, got 0.0"), ({"max_iterations": 0}, r"`max_iterations` must be an integer ≥ 1, got 0")],
)
def test_sinkhorn_rejects_bad_options(kwargs: dict, message: str) -> None:
    a = torch.randn(1, 4, 2)
    with pytest.raises(ValueError, match=message):
        sinkhorn_ot(a, a, **kwargs)


def test_identical_clouds_cost_zero_for_exact_and_paired() -> None:
    a = torch.randn(2, 16, 3, dtype=torch.float64)
    a_shuffled = a[:, torch.randperm(16)]
    assert exact_ot_cost(a, a_shuffled).abs().max().item() == 0.0
    assert paired_cost(a, a).abs().max().item() == 0.0


def test_outputs_are_float64_and_shapes_checked() -> None:
    a = torch.randn(2, 8, 3)
    assert exact_ot_cost(a, a).dtype == torch.float64
    with pytest.raises(ValueError, match=r"a: \(2, 8, 3\) and b: \(2, 9, 3\)"):
        exact_ot_cost(a, torch.randn(2, 9, 3))
    with pytest.raises(ValueError, match=r"shape \(b, n, d\)"):
        paired_cost(torch.randn(8, 3), torch.randn(8, 3))


def test_sinkhorn_is_scale_free() -> None:
    # ε and the stopping rule are relative to the mean cost: scaling both clouds by c scales the
    # cost by c² and leaves the iterations unchanged.
    g = torch.Generator().manual_seed(8)
    a = torch.randn(1, 40, 3, generator=g, dtype=torch.float64)
    b = torch.randn(1, 40, 3, generator=g, dtype=torch.float64)
    scale = 7.0
    scaled, plain = sinkhorn_ot(scale * a, scale * b), sinkhorn_ot(a, b)
    torch.testing.assert_close(scaled.cost, scale**2 * plain.cost, rtol=1e-9, atol=0)
    torch.testing.assert_close(scaled.iterations, plain.iterations)
    assert math.isfinite(sinkhorn_ot_cost(1e-150 * a, 1e-150 * b, max_iterations=20).item())


def test_solver_threads_are_read_again_as_problems_finish(monkeypatch) -> None:
    """A job that starts on one solver thread beside training takes every core once the loop waits
    for it, within the same call; the permutations are those of a one-thread solve."""
    import threading
    import time

    import lightning_complexity.functional.ot as ot

    if ot._cores() < 2:
        pytest.skip("needs two cores")
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(6, 40, 5, generator=g), torch.randn(6, 40, 5, generator=g)
    expected = ot.exact_assignment(a, b, num_threads=1)
    solve, lock, active, peaks, finished = ot._solve_assignment, threading.Lock(), [0], [], [0]

    def slow_solve(cost):
        with lock:
            active[0] += 1
            peaks.append(active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
            finished[0] += 1
        return solve(cost)

    monkeypatch.setattr(ot, "_solve_assignment", slow_solve)
    monkeypatch.setattr(ot, "_screened_assignment", lambda a, b: (torch.zeros(a.shape[:2], dtype=torch.long), torch.zeros(a.shape[0], dtype=torch.bool), torch.zeros(a.shape[0], dtype=torch.bool)))
    with ot.solver_threads(lambda: 1 if finished[0] < 2 else 2):  # "the loop starts waiting" after 2 problems
        got = ot.exact_assignment(a, b)
    assert torch.equal(got, expected)
    assert peaks[:2] == [1, 1] and max(peaks) == 2
