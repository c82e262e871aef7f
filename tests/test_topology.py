"""Betti numbers of thresholded feature maps (SPEC §5): fixtures, toy shapes, references, summaries."""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_complexity.functional.topology import (
    active_fraction,
    betti_depth_decay,
    betti_numbers,
    connected_components,
    euler_characteristic,
)

BACKENDS = ["scipy", "torch"]


# --- independent slow reference: breadth-first search on Python lists -----------------------------------

def _count_components(cells: set[tuple[int, int]], steps: list[tuple[int, int]]) -> int:
    seen: set[tuple[int, int]] = set()
    components = 0
    for start in cells:
        if start in seen:
            continue
        components += 1
        seen.add(start)
        queue = deque([start])
        while queue:
            i, j = queue.popleft()
            for di, dj in steps:
                neighbour = (i + di, j + dj)
                if neighbour in cells and neighbour not in seen:
                    seen.add(neighbour)
                    queue.append(neighbour)
    return components


_STEPS_4 = [(-1, 0), (1, 0), (0, -1), (0, 1)]
_STEPS_8 = _STEPS_4 + [(-1, -1), (-1, 1), (1, -1), (1, 1)]


def reference_betti(mask: np.ndarray) -> tuple[int, int]:
    """(b0, b1) of a bool map, T-construction: 8-connected pieces, bounded 4-connected holes.

    The background gets a one-pixel frame so everything that reaches the border joins a single
    unbounded component, which is not a hole (Alexander duality in the plane).
    """
    height, width = mask.shape
    foreground = {(i, j) for i in range(height) for j in range(width) if mask[i, j]}
    background = {(i, j) for i in range(-1, height + 1) for j in range(-1, width + 1)} - foreground
    return _count_components(foreground, _STEPS_8), _count_components(background, _STEPS_4) - 1


def _maps(pattern: list[str]) -> torch.Tensor:
    return torch.tensor([[1.0 if ch == "#" else 0.0 for ch in row] for row in pattern])


# --- fixtures --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_fixture_files_exactly(fixtures_dir: Path, fixture_cases: dict, backend: str) -> None:
    for case in fixture_cases["betti"]["cases"]:
        data = np.load(fixtures_dir / case["file"])
        for dtype in (torch.float64, torch.float32):  # casting to float32 is lossless
            result = betti_numbers(torch.from_numpy(data["x"]).to(dtype), case["threshold"], backend=backend)
            assert result.dtype == torch.int64
            assert result.shape == (*data["x"].shape[:2], 2)
            np.testing.assert_array_equal(result[..., 0].numpy(), data["b0"], err_msg=case["name"])
            np.testing.assert_array_equal(result[..., 1].numpy(), data["b1"], err_msg=case["name"])
            np.testing.assert_array_equal(result[..., 0].numpy(), np.array(case["expected_b0"]))
            np.testing.assert_array_equal(result[..., 1].numpy(), np.array(case["expected_b1"]))


def test_fixture_active_fraction(fixtures_dir: Path, fixture_cases: dict) -> None:
    for case in fixture_cases["betti"]["cases"]:
        x = torch.from_numpy(np.load(fixtures_dir / case["file"])["x"])
        assert active_fraction(x).mean().item() == pytest.approx(case["active_fraction"], abs=1e-12)


def test_fixture_toy_shapes_by_name(fixtures_dir: Path, fixture_cases: dict) -> None:
    case = next(c for c in fixture_cases["betti"]["cases"] if "channel_names" in c)
    result = betti_numbers(torch.from_numpy(np.load(fixtures_dir / case["file"])["x"]))[0]
    by_name = dict(zip(case["channel_names"], map(tuple, result.tolist())))
    assert by_name["ring"] == (1, 1)
    assert by_name["two_blobs"] == (2, 0)
    assert by_name["figure_eight"] == (1, 2)
    assert by_name["empty"] == (0, 0)
    assert by_name["full"] == (1, 0)
    assert by_name["c_shape_open_to_border"] == (1, 0)
    assert by_name["ring_with_dot_inside"] == (2, 1)


# --- toy shapes --------------------------------------------------------------------------------------------

TOY_SHAPES = {
    "ring": (["#####", "#...#", "#...#", "#####"], (1, 1)),
    "two_blobs": (["##...", "##...", ".....", "...##"], (2, 0)),
    "corner_touch_is_connected": (["#..", ".#.", "..#"], (1, 0)),
    "diagonal_ring_has_a_4_connected_hole": ([".#.", "#.#", ".#."], (1, 1)),
    "hole_open_through_a_corner_is_still_a_hole": (["##.", "#.#", "###"], (1, 1)),
    "hole_touching_border_is_not_a_hole": (["#.#", "#.#", "###"], (1, 0)),
    "figure_eight": (["#####", "#.#.#", "#####"], (1, 2)),
    "checkerboard_4x4": (["#.#.", ".#.#", "#.#.", ".#.#"], (1, 2)),
    "empty": (["...", "..."], (0, 0)),
    "full": (["###", "###"], (1, 0)),
    "single_pixel": (["#"], (1, 0)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(TOY_SHAPES))
def test_toy_shapes(name: str, backend: str) -> None:
    pattern, expected = TOY_SHAPES[name]
    maps = _maps(pattern)
    assert tuple(betti_numbers(maps, backend=backend).tolist()) == expected
    assert reference_betti(maps.numpy() > 0) == expected  # the test's own reference agrees


def test_threshold_is_strict_and_movable() -> None:
    maps = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    maps[0] = torch.tensor([2.0, 2.0, 2.0])
    assert betti_numbers(maps).tolist() == [2, 0]  # exact zeros are background
    assert betti_numbers(maps, threshold=1.0).tolist() == [1, 0]
    assert betti_numbers(maps, threshold=-1.0).tolist() == [1, 0]
    assert betti_numbers(torch.tensor([[float("nan"), 1.0]])).tolist() == [1, 0]


def test_shapes_dtypes_and_degenerate_inputs() -> None:
    maps = torch.randn(2, 3, 4, 7, 9)
    result = betti_numbers(maps)
    assert result.shape == (2, 3, 4, 2) and result.dtype == torch.int64
    torch.testing.assert_close(result.reshape(-1, 2), betti_numbers(maps.reshape(-1, 7, 9)))
    assert betti_numbers(torch.zeros(0, 5, 5)).shape == (0, 2)
    assert betti_numbers(torch.zeros(3, 0, 4)).tolist() == [[0, 0]] * 3
    assert betti_numbers(torch.ones(2, 2, dtype=torch.int32)).tolist() == [1, 0]
    assert betti_numbers(torch.tensor([[True, False], [False, True]])).tolist() == [1, 0]
    assert active_fraction(torch.randn(2, 3, 4, 5)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        betti_numbers(torch.zeros(5))
    with pytest.raises(TypeError, match="torch.Tensor"):
        betti_numbers(np.zeros((3, 3)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        betti_numbers(torch.zeros(3, 3), backend="gpu")  # type: ignore[arg-type]


# --- random maps against the references ----------------------------------------------------------------

def _random_maps(count: int, size: int, seed: int) -> torch.Tensor:
    """Smoothed noise with a random offset per map: blobs, holes and specks of every size."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(count, 1, size + 2, size + 2, generator=generator, dtype=torch.float64)
    smooth = torch.nn.functional.avg_pool2d(noise, 3, stride=1).squeeze(1)
    offset = torch.empty(count, 1, 1, dtype=torch.float64).uniform_(-0.5, 0.5, generator=generator)
    return torch.relu(smooth + offset)  # exact zeros, as after a ReLU


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_maps_against_python_reference(backend: str) -> None:
    maps = torch.cat([_random_maps(60, 12, seed=1), -_random_maps(20, 12, seed=2) + 0.05])
    result = betti_numbers(maps, backend=backend)
    expected = [reference_betti(m.numpy() > 0) for m in maps]
    assert [tuple(r) for r in result.tolist()] == expected


def test_rectangular_random_maps_against_python_reference() -> None:
    generator = torch.Generator().manual_seed(5)
    maps = torch.rand(40, 9, 14, generator=generator) - 0.45
    expected = [reference_betti(m.numpy() > 0) for m in maps]
    for backend in BACKENDS:
        assert [tuple(r) for r in betti_numbers(maps, backend=backend).tolist()] == expected


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 9).flatmap(
        lambda h: st.integers(1, 9).flatmap(
            lambda w: st.lists(st.lists(st.booleans(), min_size=w, max_size=w), min_size=h, max_size=h)
        )
    )
)
def test_any_small_binary_map_matches_reference(rows: list[list[bool]]) -> None:
    mask = np.array(rows, dtype=bool)
    expected = reference_betti(mask)
    maps = torch.from_numpy(mask).to(torch.float32)
    for backend in BACKENDS:
        assert tuple(betti_numbers(maps, backend=backend).tolist()) == expected


def test_random_maps_against_gudhi() -> None:
    gudhi = pytest.importorskip("gudhi")
    maps = torch.cat([_random_maps(150, 16, seed=3), -_random_maps(50, 16, seed=4) + 0.1])
    ours = betti_numbers(maps)
    for m, (b0, b1) in zip(maps.numpy(), ours.tolist()):
        # Sublevel set {−x ≤ −smallest selected value} = {x > 0}: as in the fixtures' provenance.
        complex_ = gudhi.CubicalComplex(top_dimensional_cells=-m)
        complex_.compute_persistence(homology_coeff_field=2, min_persistence=-1)
        positive = m[m > 0]
        level = -positive.min() if positive.size else -1.0
        expected = complex_.persistent_betti_numbers(level, level)[:2] if positive.size else [0, 0]
        assert [b0, b1] == list(expected)


def test_torch_backend_on_long_thin_shapes() -> None:
    """A spiral and a serpentine are the slowest cases for propagation; the count stays exact."""
    snake = torch.zeros(40, 40)
    snake[::2] = 1.0
    for row in range(1, 40, 2):
        snake[row, 39 if (row // 2) % 2 == 0 else 0] = 1.0
    spiral = _spiral(31)
    for maps in (snake, spiral):
        expected = reference_betti(maps.numpy() > 0)
        for backend in BACKENDS:
            assert tuple(betti_numbers(maps, backend=backend).tolist()) == expected
    assert tuple(betti_numbers(snake).tolist()) == (1, 0)
    assert betti_numbers(spiral)[0].item() == 1


def _spiral(size: int) -> torch.Tensor:
    """A one-pixel-wide square spiral whose arms are one pixel apart."""
    grid = torch.zeros(size, size)
    directions = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    i = j = heading = 0
    grid[0, 0] = 1.0

    def can_move(d: int) -> bool:
        di, dj = directions[d]
        ni, nj = i + di, j + dj
        inside = 0 <= ni < size and 0 <= nj < size
        ahead = (ni + di, nj + dj)
        blocked = 0 <= ahead[0] < size and 0 <= ahead[1] < size and grid[ahead].item() > 0
        return inside and not blocked

    while True:
        if not can_move(heading):
            heading = (heading + 1) % 4
            if not can_move(heading):
                return grid
        i, j = i + directions[heading][0], j + directions[heading][1]
        grid[i, j] = 1.0


def test_euler_characteristic_and_components_agree_with_reference() -> None:
    maps = _random_maps(30, 10, seed=6) > 0
    for m, chi, b0 in zip(maps, euler_characteristic(maps), connected_components(maps, "torch")):
        r0, r1 = reference_betti(m.numpy())
        assert (chi.item(), b0.item()) == (r0 - r1, r0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_the_device() -> None:
    maps = _random_maps(64, 20, seed=7)
    on_gpu = betti_numbers(maps.cuda())  # auto: the torch labelling, on the device
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), betti_numbers(maps))
    assert active_fraction(maps.cuda()).device.type == "cuda"


def test_scipy_labels_in_any_order_are_counted_right(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast count relies on scipy numbering components in raster order; without it, the slow path."""
    from scipy import ndimage

    label = ndimage.label

    def shuffled_label(mask, structure=None):
        labels, count = label(mask, structure=structure)
        order = np.concatenate(([0], 1 + np.random.default_rng(0).permutation(count)))
        return order[labels], count

    maps = _random_maps(40, 12, seed=8)
    expected = betti_numbers(maps)
    monkeypatch.setattr(ndimage, "label", shuffled_label)
    torch.testing.assert_close(betti_numbers(maps, backend="scipy"), expected)


# --- depth summaries -----------------------------------------------------------------------------------

def test_depth_decay_of_an_exponential_curve() -> None:
    depth = torch.linspace(0, 1, 7, dtype=torch.float64)
    summary = betti_depth_decay(3.0 * torch.exp(-1.5 * depth))
    assert summary.decay_rate.item() == pytest.approx(-1.5, abs=1e-12)
    # ∫₀¹ (ln 3 − 1.5u) du; the trapezoid rule is exact for a straight line.
    assert summary.normalised_area.item() == pytest.approx(math.log(3.0) - 0.75, abs=1e-12)


def test_depth_decay_constant_batched_and_undefined() -> None:
    curves = torch.tensor([[2.0, 2.0, 2.0], [1.0, 0.0, 1.0], [0.0, 0.0, 5.0], [1.0, float("nan"), math.e]])
    summary = betti_depth_decay(curves)
    assert summary.decay_rate.shape == (4,)
    assert summary.decay_rate[0].item() == 0.0 and summary.normalised_area[0].item() == pytest.approx(math.log(2.0))
    # A site with no topology (ln 0) is skipped: the two remaining sites are flat at ln 1 = 0.
    assert summary.decay_rate[1].item() == 0.0 and summary.normalised_area[1].item() == 0.0
    assert math.isnan(summary.decay_rate[2].item()) and math.isnan(summary.normalised_area[2].item())
    # Sites 0 and 2 remain: slope (1 − 0) / 1, mean height 0.5 over the span they cover.
    assert summary.decay_rate[3].item() == pytest.approx(1.0) and summary.normalised_area[3].item() == pytest.approx(0.5)
    single = betti_depth_decay(torch.tensor([4.0]))
    assert math.isnan(single.decay_rate.item()) and math.isnan(single.normalised_area.item())
    with pytest.raises(ValueError):
        betti_depth_decay(torch.tensor(1.0))


def test_depth_decay_from_real_betti_numbers() -> None:
    sites = [_random_maps(16, 16, seed=s) for s in range(4)]
    mean_sums = torch.stack([betti_numbers(m).sum(-1).double().mean() for m in sites])
    summary = betti_depth_decay(mean_sums)
    assert torch.isfinite(summary.decay_rate) and torch.isfinite(summary.normalised_area)
