"""Layer algebra (SPEC §7): parameter totals of reference networks, MACs and receptive fields by hand,
the region bound, composition over branches, and the fallback without torch.fx."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_complexity.layer_algebra import LayerAlgebra, layer_algebra, region_multiplier_log2

# Tiny tensors on a small shared CPU: one intra-op thread (see conftest.single_torch_thread).
pytestmark = pytest.mark.usefixtures("single_torch_thread")


# --- compact builders with torchvision's exact layer shapes ----------------------------------------------

VGG16_CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16(num_classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG16_CONFIG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.ReLU(inplace=True)]
            channels = int(v)
    classifier = [nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout()]
    return nn.Sequential(
        nn.Sequential(*layers), nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Sequential(*classifier, nn.Linear(4096, num_classes))
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
        self.relu, self.downsample = nn.ReLU(inplace=True), downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))  # one ReLU module, called twice: two sites
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, 4 * width, 1, bias=False), nn.BatchNorm2d(4 * width)
        self.relu, self.downsample = nn.ReLU(inplace=True), downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock] | type[Bottleneck], counts: list[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        cin, stages = 64, []
        for i, (width, count) in enumerate(zip([64, 128, 256, 512], counts)):
            stride, out = (1 if i == 0 else 2), width * block.expansion
            down = None
            if stride != 1 or cin != out:
                down = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            stages.append(nn.Sequential(block(cin, width, stride, down), *[block(out, width) for _ in range(count - 1)]))
            cin = out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def on_meta(build, size: int = 224) -> LayerAlgebra:
    """Build and measure on the meta device: shapes only, no memory, no arithmetic."""
    with torch.device("meta"):
        model = build()
    return layer_algebra(model, torch.zeros(1, 3, size, size, device="meta"))


def row(table: LayerAlgebra, name: str):
    return next(r for r in table.rows if r.name == name)


# --- reference networks ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("build", "parameters", "depth"),
    [(vgg16, 138_357_544, 16), (lambda: ResNet(BasicBlock, [2, 2, 2, 2]), 11_689_512, 18),
     (lambda: ResNet(Bottleneck, [3, 4, 6, 3]), 25_557_032, 50)],
    ids=["vgg16", "resnet18", "resnet50"],
)  # fmt: skip
def test_reference_networks_parameters_and_depth(build, parameters: int, depth: int) -> None:
    table = on_meta(build)
    assert table.totals.structure == "torch.fx"
    assert table.totals.parameters == parameters
    assert table.totals.parameters_in_layers == parameters == sum(r.parameters for r in table.rows)
    assert table.totals.depth == depth  # weight layers on the longest path: the "16", "18", "50"
    assert table.totals.intrinsic_power == pytest.approx(math.log2(1000 / (3 * 224 * 224)))


def test_small_inputs_work_thanks_to_adaptive_pooling() -> None:
    table = on_meta(vgg16, size=32)
    assert table.totals.parameters == 138_357_544
    assert row(table, "1").receptive_field == (212, 212)  # 1×1 → 7×7 copies: no new pixels seen


def test_vgg16_receptive_fields_and_macs_by_hand() -> None:
    table = on_meta(vgg16)
    assert row(table, "0.28").receptive_field == (196, 196)  # conv5_3
    assert row(table, "0.30").receptive_field == (212, 212)  # pool5
    assert row(table, "0.30").jump == (32.0, 32.0)
    # Convolutions: H·W·C_out·C_in·9 at each resolution; the classifier: in·out.
    conv_macs, size, channels = 0, 224, 3
    for v in VGG16_CONFIG:
        if v == "M":
            size //= 2
        else:
            conv_macs += size * size * int(v) * channels * 9
            channels = int(v)
    assert table.totals.macs == conv_macs + 25088 * 4096 + 4096 * 4096 + 4096 * 1000 == 15_470_264_320


def test_resnet_receptive_fields_follow_the_longest_branch() -> None:
    resnet18 = on_meta(lambda: ResNet(BasicBlock, [2, 2, 2, 2]))
    resnet50 = on_meta(lambda: ResNet(Bottleneck, [3, 4, 6, 3]))
    assert row(resnet18, "layer4.1.relu#1").receptive_field == (435, 435)
    assert row(resnet50, "layer4.2.relu#2").receptive_field == (427, 427)
    # The reused ReLU gives one row per call; its (absent) parameters count once.
    assert [r.name for r in resnet18.rows if r.name.startswith("layer1.0.relu")] == ["layer1.0.relu", "layer1.0.relu#1"]


# --- single layers by hand -------------------------------------------------------------------------------

def test_macs_and_sizes_of_single_layers() -> None:
    conv = layer_algebra(nn.Conv2d(3, 8, 3, padding=1), torch.zeros(2, 3, 10, 10)).rows[0]
    assert (conv.parameters, conv.macs, conv.input_size, conv.output_size) == (3 * 8 * 9 + 8, 8 * 10 * 10 * 3 * 9, 300, 800)
    assert conv.intrinsic_power == pytest.approx(math.log2(8 / 3))
    grouped = layer_algebra(nn.Conv2d(4, 8, 3, groups=2, bias=False), torch.zeros(1, 4, 6, 6)).rows[0]
    assert grouped.macs == 8 * 4 * 4 * (2 * 9) and grouped.parameters == 8 * 2 * 9
    linear = layer_algebra(nn.Linear(20, 5), torch.zeros(3, 20)).rows[0]
    assert (linear.parameters, linear.macs) == (105, 100)
    tokens = layer_algebra(nn.Linear(20, 5), torch.zeros(3, 7, 20)).rows[0]
    assert tokens.macs == 7 * 20 * 5
    transposed = layer_algebra(nn.ConvTranspose2d(2, 3, 4, stride=2), torch.zeros(1, 2, 5, 5)).rows[0]
    assert transposed.macs == 2 * 5 * 5 * 3 * 16
    norm = layer_algebra(nn.BatchNorm2d(4), torch.zeros(1, 4, 3, 3)).rows[0]
    assert norm.macs == 36 and norm.layer_complexity == 0.0


def test_receptive_field_of_a_conv_stack_by_hand() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3),  # r = 3, j = 1
        nn.ReLU(),
        nn.Conv2d(2, 2, 3, stride=2),  # r = 3 + 2·1 = 5, j = 2
        nn.MaxPool2d(2),  # r = 5 + 1·2 = 7, j = 4
        nn.Conv2d(2, 2, 3, dilation=2),  # k_eff = 5: r = 7 + 4·4 = 23, j = 4
        nn.AvgPool2d((1, 3), stride=(1, 1)),  # anisotropic: r = (23, 23 + 2·4 = 31)
        nn.Flatten(),
        nn.Linear(2 * 11 * 4, 1),
    )
    table = layer_algebra(net, torch.zeros(1, 1, 64, 46))
    assert [r.receptive_field for r in table.rows] == [(3, 3), (3, 3), (5, 5), (7, 7), (23, 23), (23, 31), None, None]
    assert [r.jump for r in table.rows][:6] == [(1.0, 1.0), (1.0, 1.0), (2.0, 2.0), (4.0, 4.0), (4.0, 4.0), (4.0, 4.0)]
    assert table.totals.receptive_field == (23, 31)


# --- the region bound ------------------------------------------------------------------------------------

def test_region_multiplier_bound() -> None:
    assert region_multiplier_log2(0, 5) == 0.0
    assert region_multiplier_log2(4, 2) == math.log2(1 + 4 + 6)
    assert region_multiplier_log2(7, 7) == 7.0 and region_multiplier_log2(7, 100) == 7.0
    # Exact integers up to d = 4096, log-space lgamma sums above: both agree with an independent sum.
    n = 10**6
    for d in (4096, 4097):
        j = torch.arange(d + 1, dtype=torch.float64)
        terms = math.lgamma(n + 1) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)
        assert region_multiplier_log2(n, d) == pytest.approx(float(torch.logsumexp(terms, 0)) / math.log(2), rel=1e-12)
    # One more term, C(n, 4097) ≈ C(n, 4096)·(n − 4096)/4097, raises the sum by a bounded factor.
    step = region_multiplier_log2(n, 4097) - region_multiplier_log2(n, 4096)
    assert 0 < step <= math.log2(1 + (n - 4096) / 4097)


def test_layer_complexity_per_layer_type() -> None:
    net = nn.Sequential(nn.Linear(10, 2), nn.Linear(2, 8), nn.ReLU(), nn.Hardtanh(), nn.Unflatten(1, (2, 4)), nn.MaxPool1d(2), nn.Flatten(), nn.GELU())
    table = layer_algebra(net, torch.zeros(1, 10))
    complexity = {r.type: r.layer_complexity for r in table.rows}
    assert complexity["Linear"] == 0.0
    # After the 2-wide bottleneck the input lies on a plane: 8 hyperplanes cut it into ≤ 1 + 8 + 28 pieces.
    assert complexity["ReLU"] == math.log2(1 + 8 + 28) and row(table, "2").input_dim_bound == 2
    assert complexity["Hardtanh"] == math.log2(1 + 16 + 120)
    assert complexity["MaxPool1d"] == math.log2(1 + 4 + 6)  # 4 windows of 2: one comparison each
    assert row(table, "5").units == 4
    assert math.isnan(complexity["GELU"]) and math.isnan(table.totals.layer_complexity)


# --- composition -----------------------------------------------------------------------------------------

class TwoBranches(nn.Module):
    """A deep and a shallow branch, concatenated, then a residual sum and a functional ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.deep = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))
        self.shallow = nn.Conv2d(2, 1, 1)
        self.mix = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.deep(x), self.shallow(x)], dim=1)
        return F.relu(self.mix(y) + x)


def test_composition_over_parallel_branches() -> None:
    table = layer_algebra(TwoBranches(), torch.zeros(1, 2, 6, 6))
    names = [r.name for r in table.rows]
    assert names == ["deep.0", "deep.1", "deep.2", "shallow", "mix", "relu"]
    assert table.totals.depth == 3  # deep.0 → deep.2 → mix; the shallow branch is shorter
    assert row(table, "mix").receptive_field == (5, 5)  # the deep branch's, not the shallow one's 1×1
    relu = row(table, "relu")
    assert relu.type == "relu" and relu.receptive_field == (5, 5)
    assert relu.input_dim_bound == 2 * 6 * 6  # mix(y) + x: at most the input's dimension
    total = sum(r.layer_complexity for r in table.rows)
    assert table.totals.layer_complexity == pytest.approx(total) == pytest.approx(relu.cumulative_complexity)
    assert row(table, "deep.1").cumulative_complexity == row(table, "deep.1").layer_complexity
    assert table.totals.intrinsic_power == 0.0


def test_functional_layers_get_rows() -> None:
    class LeNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2, self.fc = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5), nn.Linear(256, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), kernel_size=(2, 2))
            return self.fc(x.view(x.size(0), -1)).relu()

    table = layer_algebra(LeNet(), torch.zeros(2, 1, 28, 28))
    assert [(r.name, r.type) for r in table.rows] == [
        ("conv1", "Conv2d"), ("relu", "relu"), ("max_pool2d", "max_pool2d"), ("conv2", "Conv2d"),
        ("relu_1", "relu"), ("max_pool2d_1", "max_pool2d"), ("fc", "Linear"), ("relu_2", "relu"),
    ]  # fmt: skip
    assert [r.receptive_field for r in table.rows][:6] == [(5, 5), (5, 5), (6, 6), (14, 14), (14, 14), (16, 16)]
    assert row(table, "max_pool2d").units == 6 * 12 * 12 * 6  # windows × C(4, 2) comparisons
    assert table.totals.macs == 6 * 24 * 24 * 25 + 16 * 8 * 8 * 6 * 25 + 256 * 10
    assert table.totals.parameters == table.totals.parameters_in_layers == 156 + 2416 + 2570


def test_shared_weights_count_once_and_tuple_inputs() -> None:
    class Siamese(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Linear(4, 3)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.encoder(a) - self.encoder(b)

    table = layer_algebra(Siamese(), (torch.zeros(2, 4), torch.zeros(2, 4)))
    assert [(r.name, r.parameters) for r in table.rows] == [("encoder", 15), ("encoder#1", 0)]
    assert table.totals.parameters == 15 and table.totals.input_size == 8 and table.totals.output_size == 3


# --- fallback, state, output ------------------------------------------------------------------------------

class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.act, self.b = nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # torch.fx cannot trace this
            x = self.a(x)
        return self.b(self.act(x))


def test_fallback_to_hooks_when_fx_cannot_trace() -> None:
    with pytest.warns(UserWarning, match="series"):
        table = layer_algebra(DataDependent(), torch.ones(1, 3))
    assert table.totals.structure == "forward hooks (series assumption)"
    assert [r.name for r in table.rows] == ["a", "act", "b"]
    assert table.totals.parameters == 20 and table.totals.macs == 15 and table.totals.depth == 2


def test_hooks_agree_with_fx_on_a_resnet() -> None:
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10)
    x = torch.zeros(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fx must trace it: no fallback warning
        traced = layer_algebra(model, x)
    hooked = layer_algebra(model, x, use_fx=False)
    assert [r.name for r in hooked.rows] == [r.name for r in traced.rows]
    for field in ("parameters", "macs", "input_size", "output_size"):
        assert [getattr(r, field) for r in hooked.rows] == [getattr(r, field) for r in traced.rows]
    assert hooked.totals.parameters == traced.totals.parameters == sum(p.numel() for p in model.parameters())


def test_model_state_is_left_as_it_was() -> None:
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)
    model.train()
    model.layer2.eval()
    flags = [m.training for m in model.modules()]
    before = copy.deepcopy(model.state_dict())
    layer_algebra(model, torch.randn(2, 3, 32, 32))
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BatchNorm statistics too
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_dataframe_and_markdown() -> None:
    table = layer_algebra(TwoBranches(), torch.zeros(1, 2, 6, 6))
    frame = table.to_dataframe()
    assert len(frame) == len(table.rows)
    assert {"name", "type", "parameters", "macs", "intrinsic_power", "receptive_field", "layer_complexity", "depth"} <= set(frame.columns)
    assert frame.loc[frame.name == "mix", "receptive_field"].item() == "5×5"
    text = table.to_markdown()
    assert text.splitlines()[0].startswith("| layer | type | parameters |")
    assert len(text.splitlines()) == 2 + len(table.rows) + 1 and "**total**" in text.splitlines()[-1]
    assert "… 4 more" in table.to_markdown(max_rows=2)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        layer_algebra(lambda x: x, torch.zeros(1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="example_input"):
        layer_algebra(nn.Linear(2, 2), ())
