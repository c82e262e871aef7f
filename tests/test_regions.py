"""Linear regions along segments (SPEC §6): known counts, exact vs sampled, model state untouched."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_complexity.functional.regions import LinearRegionCount, count_linear_regions


# Tiny tensors on a small shared CPU: one intra-op thread (see conftest.single_torch_thread).
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def tent_map_network(depth: int) -> nn.Sequential:
    """Each layer computes the tent map 2·min(x, 1 − x) = 2·relu(x) − 4·relu(x − ½) on [0, 1]."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        hidden, out = nn.Linear(1, 2), nn.Linear(2, 1)
        with torch.no_grad():
            hidden.weight.copy_(torch.tensor([[1.0], [1.0]]))
            hidden.bias.copy_(torch.tensor([0.0, -0.5]))
            out.weight.copy_(torch.tensor([[2.0, -4.0]]))
            out.bias.zero_()
        layers += [hidden, nn.ReLU(), out]
    return nn.Sequential(*layers)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(16, 3),
    )  # fmt: skip


class Residual(nn.Module):
    """An ordinary module composed of supported ones: a residual block and a concatenation."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
        self.side = nn.Sequential(nn.Linear(width, 3), nn.Hardtanh())
        self.act = nn.ReLU()
        self.head = nn.Linear(width + 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.act(x + self.inner(x)), self.side(x)], dim=1))


class FunctionalReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(2, 8), nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.relu(self.a(x)))


# --- known counts ------------------------------------------------------------------------------------

def test_one_hidden_layer_crossing_every_hyperplane_gives_width_plus_one() -> None:
    torch.manual_seed(1)
    width, dim = 32, 5
    net = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, 1))
    direction = torch.randn(1, dim)
    # Long enough that every hyperplane w·x + b = 0 is crossed: t_i = −(w·x0 + b)/(w·v) lies in (0, 1).
    w, b = net[0].weight.detach().double(), net[0].bias.detach().double()
    x0, x1 = -1000.0 * direction, 1000.0 * direction
    crossings = -(x0.double() @ w.T + b) / ((x1 - x0).double() @ w.T)
    assert bool(((crossings > 0) & (crossings < 1)).all())
    result = count_linear_regions(net, x0, x1)
    assert result.counts.tolist() == [width + 1]
    torch.testing.assert_close(result.boundaries[0], crossings.flatten().sort().values, rtol=0, atol=1e-12)
    assert result.num_units == width
    assert result.per_neuron.item() == pytest.approx((width + 1) / width)
    assert result.per_unit_length.item() == pytest.approx((width + 1) / (2000.0 * direction.norm().item()))


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 8])
def test_tent_map_network_has_two_to_the_depth_regions(depth: int) -> None:
    net = tent_map_network(depth)
    result = count_linear_regions(net, torch.zeros(1, 1), torch.ones(1, 1))
    assert result.counts.tolist() == [2**depth]
    expected = torch.arange(1, 2**depth, dtype=torch.float64) / 2**depth
    torch.testing.assert_close(result.boundaries[0], expected, rtol=0, atol=1e-8)
    sampled = count_linear_regions(net, torch.zeros(1, 1), torch.ones(1, 1), method="sampled", num_samples=2 ** (depth + 3))
    assert sampled.counts.tolist() == [2**depth]


def test_purely_linear_networks_have_one_region() -> None:
    mlp = nn.Sequential(nn.Linear(3, 7), nn.Linear(7, 2))
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.AvgPool2d(2), nn.Dropout(0.5), nn.Flatten(), nn.Linear(2, 1))
    cnn.train()  # BatchNorm and Dropout must be evaluated in eval mode
    for net, shape in ((mlp, (4, 3)), (cnn, (4, 1, 4, 4))):
        result = count_linear_regions(net, torch.randn(shape), torch.randn(shape))
        assert result.counts.tolist() == [1, 1, 1, 1]
        assert result.num_units == 0 and bool(result.per_neuron.isnan().all())
        assert all(b.numel() == 0 for b in result.boundaries)
        assert count_linear_regions(net, torch.randn(shape), torch.randn(shape), method="sampled").counts.tolist() == [1] * 4


@pytest.mark.parametrize(
    ("activation", "x_range", "expected"),
    [(nn.Hardtanh(), (-3.0, 3.0), 3), (nn.ReLU6(), (-1.0, 7.0), 3), (nn.LeakyReLU(0.2), (-1.0, 1.0), 2),
     (nn.PReLU(), (-1.0, 1.0), 2), (nn.ReLU6(), (0.5, 5.0), 1)],
)  # fmt: skip
def test_elementwise_breakpoints(activation: nn.Module, x_range: tuple[float, float], expected: int) -> None:
    net = nn.Sequential(nn.Identity(), activation)
    result = count_linear_regions(net, torch.tensor([[x_range[0]]]), torch.tensor([[x_range[1]]]))
    assert result.counts.tolist() == [expected]


def test_max_pool_argmax_switch_is_a_boundary() -> None:
    # max(x, −x/2 + 1) over x from −1 to 3: the maximum switches input once, at x = 2/3.
    pool = nn.Sequential(nn.Unflatten(1, (1, 2)), nn.MaxPool1d(2))
    result = count_linear_regions(pool, torch.tensor([[-1.0, 1.5]]), torch.tensor([[3.0, -0.5]]))
    assert result.counts.tolist() == [2]
    assert result.boundaries[0].item() == pytest.approx(5 / 12)  # x(t) = −1 + 4t meets 1.5 − 2t
    assert result.num_units == 1


# --- exact against sampled -------------------------------------------------------------------------------

def _exact_equals_dense_sampling(net: nn.Module, x0: torch.Tensor, x1: torch.Tensor) -> LinearRegionCount:
    exact = count_linear_regions(net, x0, x1)
    sparse = count_linear_regions(net, x0, x1, method="sampled", num_samples=16)
    assert bool((exact.counts >= sparse.counts).all())
    assert bool((exact.counts > sparse.counts).any())  # 16 samples are too few here
    points = [torch.cat((torch.zeros(1, dtype=torch.float64), b, torch.ones(1, dtype=torch.float64))) for b in exact.boundaries]
    narrowest = min(float((p[1:] - p[:-1]).min()) for p in points)
    num_samples = math.ceil(3.0 / narrowest)  # at least one sample inside every region
    assert num_samples <= 200_000, "choose another seed: some region is too narrow for a quick test"
    dense = count_linear_regions(net, x0, x1, method="sampled", num_samples=num_samples, batch_size=65536)
    assert dense.counts.tolist() == exact.counts.tolist()
    assert dense.num_units == exact.num_units
    return exact


def test_cnn_with_max_pool_exact_equals_dense_sampling() -> None:
    generator = torch.Generator().manual_seed(4)
    x0 = torch.randn(2, 1, 8, 8, generator=generator)
    x1 = x0 + 0.7 * torch.randn(2, 1, 8, 8, generator=generator)  # short segments: a quick dense sampling
    exact = _exact_equals_dense_sampling(small_cnn(), x0, x1)
    assert exact.num_units == 3 * 8 * 8 + 3 * 4 * 4 + 4 * 2 * 2


def test_residual_and_concatenation_exact_equals_dense_sampling() -> None:
    torch.manual_seed(3)
    _exact_equals_dense_sampling(Residual(6), torch.randn(3, 6), torch.randn(3, 6))


def test_padded_ceil_mode_max_pool_exact_equals_dense_sampling() -> None:
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(1, 2, 2), nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.Flatten(), nn.Linear(2 * 3 * 3, 1))
    assert net(torch.zeros(1, 1, 6, 6)).shape == (1, 1)
    _exact_equals_dense_sampling(net, torch.randn(2, 1, 6, 6), torch.randn(2, 1, 6, 6))


def test_segments_are_independent_in_a_batch() -> None:
    net, generator = small_cnn(), torch.Generator().manual_seed(5)
    x0, x1 = torch.randn(3, 1, 8, 8, generator=generator), torch.randn(3, 1, 8, 8, generator=generator)
    together = count_linear_regions(net, x0, x1)
    alone = [count_linear_regions(net, x0[i : i + 1], x1[i : i + 1]) for i in range(3)]
    assert together.counts.tolist() == [r.counts.item() for r in alone]
    for b, r in zip(together.boundaries, alone):
        torch.testing.assert_close(b, r.boundaries[0])
    assert together.mean_count == pytest.approx(sum(r.counts.item() for r in alone) / 3)
    sampled = count_linear_regions(net, x0, x1, method="sampled", num_samples=64)
    sampled_alone = [count_linear_regions(net, x0[i : i + 1], x1[i : i + 1], method="sampled", num_samples=64) for i in range(3)]
    assert sampled.counts.tolist() == [r.counts.item() for r in sampled_alone]


def test_in_place_relu_counts_like_out_of_place() -> None:
    torch.manual_seed(6)
    in_place = nn.Sequential(nn.Linear(3, 10), nn.ReLU(inplace=True), nn.Linear(10, 10), nn.ReLU(inplace=True), nn.Linear(10, 1))
    out_of_place = copy.deepcopy(in_place)
    out_of_place[1].inplace = out_of_place[3].inplace = False
    x0, x1 = torch.randn(3, 3), torch.randn(3, 3)
    assert count_linear_regions(in_place, x0, x1).counts.tolist() == count_linear_regions(out_of_place, x0, x1).counts.tolist()


def test_float32_computation_on_a_simple_net() -> None:
    net = tent_map_network(3)
    result = count_linear_regions(net, torch.zeros(1, 1), torch.ones(1, 1), dtype=None)
    assert result.counts.tolist() == [8]


# --- model state, unsupported networks, arguments ---------------------------------------------------------

def test_model_state_is_left_exactly_as_it_was() -> None:
    net = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.3), nn.Linear(6, 2))
    net.train()
    net[1].eval()  # mixed flags must come back as they were
    before = copy.deepcopy(net.state_dict())
    flags = [m.training for m in net.modules()]
    x0, x1 = torch.randn(4, 3), torch.randn(4, 3)
    for method in ("exact", "sampled"):
        count_linear_regions(net, x0, x1, method=method)
        assert [m.training for m in net.modules()] == flags
        assert torch.is_grad_enabled()
        assert all(p.grad is None and p.dtype == torch.float32 for p in net.parameters())
        for key, value in net.state_dict().items():
            assert torch.equal(value, before[key]), key
        assert all(not m._forward_pre_hooks and not m._forward_hooks for m in net.modules())


def test_functional_non_linearity_is_detected_in_exact_mode() -> None:
    torch.manual_seed(7)
    net = FunctionalReLU()
    with pytest.raises(RuntimeError, match="method='sampled'"):
        count_linear_regions(net, -3 * torch.ones(1, 2), 3 * torch.ones(1, 2))
    # Sampled mode cannot see the functional ReLU either: it finds one pattern (a lower bound).
    assert count_linear_regions(net, -3 * torch.ones(1, 2), 3 * torch.ones(1, 2), method="sampled").counts.tolist() == [1]


def test_smooth_activation_needs_sampled_mode() -> None:
    torch.manual_seed(8)
    net = nn.Sequential(nn.Linear(2, 8), nn.GELU(), nn.Linear(8, 1))
    with pytest.raises(ValueError, match=r"'1' \(GELU\)"):
        count_linear_regions(net, torch.zeros(1, 2), torch.ones(1, 2))
    result = count_linear_regions(net, -5 * torch.ones(2, 2), 5 * torch.ones(2, 2), method="sampled")
    assert result.num_units == 8 and bool((result.counts >= 1).all())  # sign of the GELU input as surrogate


def test_custom_affine_leaf_can_be_declared() -> None:
    class Scale(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 3.0 * x

    net = nn.Sequential(nn.Linear(1, 1), Scale(), nn.ReLU())
    with pytest.raises(ValueError, match="affine_modules"):
        count_linear_regions(net, torch.zeros(1, 1), torch.ones(1, 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(-0.5)
    assert count_linear_regions(net, torch.zeros(1, 1), torch.ones(1, 1), affine_modules=(Scale,)).counts.tolist() == [2]


def test_zero_length_segment_and_max_steps() -> None:
    net = tent_map_network(4)
    point = torch.full((1, 1), 0.3)
    result = count_linear_regions(net, point, point)
    assert result.counts.tolist() == [1] and math.isnan(result.per_unit_length.item())
    with pytest.raises(RuntimeError, match="max_steps=5"):
        count_linear_regions(net, torch.zeros(1, 1), torch.ones(1, 1), max_steps=5)


def test_bad_arguments() -> None:
    net = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="method"):
        count_linear_regions(net, torch.zeros(1, 2), torch.ones(1, 2), method="grid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same shape"):
        count_linear_regions(net, torch.zeros(1, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="same shape"):
        count_linear_regions(net, torch.zeros(2), torch.ones(2))
    with pytest.raises(TypeError):
        count_linear_regions(net, [0.0, 0.0], torch.ones(1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step"):
        count_linear_regions(net, torch.zeros(1, 2), torch.ones(1, 2), step=0.7)
    with pytest.raises(ValueError, match="dtype"):
        count_linear_regions(net, torch.zeros(1, 2), torch.ones(1, 2), dtype=torch.int64)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    net, generator = small_cnn(), torch.Generator().manual_seed(9)
    x0, x1 = torch.randn(3, 1, 8, 8, generator=generator), torch.randn(3, 1, 8, 8, generator=generator)
    on_cpu = count_linear_regions(net, x0, x1)
    on_gpu = count_linear_regions(net.cuda(), x0.cuda(), x1.cuda())
    assert on_gpu.counts.device.type == "cuda" and on_gpu.boundaries[0].device.type == "cuda"
    assert on_gpu.counts.tolist() == on_cpu.counts.tolist()


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation"), [(2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 1, 2), (2, 3, 1, 1)])
def test_pool_windows_match_pytorch_pooling(kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> None:
    """The windows the walk and the patterns compare are exactly the ones PyTorch pools over."""
    from lightning_complexity.functional.regions import _pool_windows

    for pool, x in (
        (nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil_mode), torch.randn(2, 3, 7, 6)),
        (nn.MaxPool1d(kernel, stride, padding, dilation, ceil_mode=ceil_mode), torch.randn(2, 3, 9)),
    ):
        expected = pool(x)
        torch.testing.assert_close(_pool_windows(pool, x, -math.inf).amax(2).view_as(expected), expected)
