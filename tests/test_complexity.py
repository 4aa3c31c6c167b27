import pytest
import torch
from torch import nn

from fernb.complexity import (complexity_table, conv_flops_formula, count_parameters, eval_mode,
                              flops, flops_per_layer, storage_mb, throughput)

ESR_CONVS = [(1, 32, 5), (32, 64, 3), (64, 64, 3), (64, 64, 3), (64, 64, 3)]


def esr_layers(first: int, last: int) -> list[nn.Module]:
    """ESR's in-the-lab convolutions first..last-1: conv, BN, ReLU, max-pool after 2nd-4th."""
    layers: list[nn.Module] = []
    for i in range(first, last):
        cin, cout, k = ESR_CONVS[i]
        layers += [nn.Conv2d(cin, cout, k), nn.BatchNorm2d(cout), nn.ReLU()]
        if i in (1, 2, 3):
            layers.append(nn.MaxPool2d(2))
    return layers


class ESRLab(nn.Module):
    """ESR-M at branching level L (INDEX facts); level 0 is a traditional ensemble."""

    def __init__(self, members: int, level: int) -> None:
        super().__init__()
        self.base = nn.Sequential(*esr_layers(0, level))
        self.branches = nn.ModuleList(
            nn.Sequential(*esr_layers(level, 5), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(64, 8))
            for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self.base(x)
        return torch.stack([branch(shared) for branch in self.branches], dim=1)


def wadhawan_subnetwork() -> nn.Sequential:
    """Wadhawan & Gandhi's feature extractor (INDEX facts) and expression head (Sec. III-C)."""
    layers: list[nn.Module] = []
    cin = 3
    for width in (16, 32, 64, 128):
        for c in (cin, width):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                         nn.Linear(128, 8))


@pytest.mark.parametrize("members, level, expected", [
    (1, 0, 131_208), (4, 0, 524_832), (4, 3, 355_104), (4, 4, 243_936)])
def test_esr_table1_parameter_counts(members, level, expected):
    assert count_parameters(ESRLab(members, level)) == expected


def test_trainable_only_skips_frozen_parameters():
    model = nn.Sequential(nn.Linear(10, 5), nn.Linear(5, 2))
    model[0].requires_grad_(False)
    assert count_parameters(model) == 12
    assert count_parameters(model, trainable_only=False) == 67


def test_esr_parameter_savings_and_table():
    models = {"TE": ESRLab(4, 0), "ESR-4 Lvl. 3": ESRLab(4, 3), "ESR-4 Lvl. 4": ESRLab(4, 4)}
    table = complexity_table(models, (1, 96, 96))
    assert list(table.columns) == ["params", "flops", "flops_formula", "storage_mb",
                                   "params_ratio", "flops_ratio", "storage_ratio"]
    # ESR: "a substantial decrease of 32% at level 3 and 54% at level 4".
    assert round(100 * (1 - table.at["ESR-4 Lvl. 3", "params_ratio"])) == 32
    assert round(100 * (1 - table.at["ESR-4 Lvl. 4", "params_ratio"])) == 54
    # Eq. 7 by hand at 96x96 ('valid' convolutions: 92, 90, 43, 19 and 7 pixels wide).
    shared = 2 * (1 * 25 * 32 * 92**2 + 32 * 9 * 64 * 90**2 + 64 * 9 * 64 * 43**2)
    branch = 2 * (64 * 9 * 64 * (19**2 + 7**2) + 64 * 8)
    assert table.at["TE", "flops"] == 4 * (shared + branch) == 4 * 478_693_376
    assert table.at["ESR-4 Lvl. 3", "flops"] == shared + 4 * branch
    assert table.at["ESR-4 Lvl. 3", "flops_ratio"] == pytest.approx(0.297, abs=5e-4)
    assert (table["flops_formula"] > table["flops"]).all()
    relative = complexity_table(models, (1, 96, 96), reference="ESR-4 Lvl. 4")
    assert relative.at["ESR-4 Lvl. 4", "params_ratio"] == 1.0
    assert relative.at["TE", "params_ratio"] == pytest.approx(524_832 / 243_936)


def test_complexity_table_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        complexity_table({}, (1, 8, 8))
    with pytest.raises(ValueError, match="reference"):
        complexity_table({"a": nn.Linear(2, 2)}, (2,), reference="b")


def test_conv_and_linear_golden_values():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    # Wadhawan eq. 7: 2 * C_i * k^2 * C_o * W * H.
    assert conv_flops_formula(conv, (3, 8, 8)) == 2 * 3 * 3**2 * 8 * 8 * 8
    assert flops(conv, (3, 8, 8)) == 2 * 3 * 3**2 * 8 * 8 * 8
    # Eq. 8: 2 * I * O.
    assert conv_flops_formula(nn.Linear(128, 8), (128,)) == 2 * 128 * 8
    # Eq. 9: (W / stride) * (H / stride) * C_o.
    assert conv_flops_formula(nn.MaxPool2d(2), (4, 8, 8)) == 4 * 4 * 4
    assert flops(nn.MaxPool2d(2), (4, 8, 8)) == 0


@pytest.mark.parametrize("model, shape", [
    (nn.Sequential(nn.Conv2d(3, 8, 5, stride=2), nn.ReLU(),
                   nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False),
                   nn.Conv2d(8, 16, 3, groups=4), nn.Flatten(), nn.Linear(16 * 30, 7)),
     (3, 17, 19)),
    (nn.Sequential(nn.Conv1d(2, 6, 3), nn.Linear(8, 4)), (2, 10)),
    (nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 3)), (5, 12)),
])
def test_formula_agrees_with_torch_counter_on_conv_linear_networks(model, shape):
    assert conv_flops_formula(model, shape) == flops(model, shape) > 0


def test_formula_minus_pooling_agrees_with_torch_counter():
    model = ESRLab(4, 3)
    per_layer = flops_per_layer(model, (1, 96, 96))
    assert set(per_layer["kind"]) == {"conv", "linear", "maxpool"}
    pooling = per_layer.loc[per_layer["kind"] == "maxpool", "flops"].sum()
    # Two pools in the base (after convs 2 and 3), one in each of the four branches.
    assert (per_layer["kind"] == "maxpool").sum() == 2 + 4
    assert conv_flops_formula(model, (1, 96, 96)) - pooling == flops(model, (1, 96, 96))


def test_wadhawan_subnetwork_complexity():
    model = wadhawan_subnetwork()
    # Sec. III-C, IV-E: about 0.29M (extractor), 0.035M (head) and 0.33M (sub-network).
    assert round(count_parameters(model[:-5]) / 1e6, 2) == 0.29
    assert count_parameters(model[-5:]) == pytest.approx(0.035e6, rel=0.05)
    assert round(count_parameters(model) / 1e6, 2) == 0.33
    # Sec. IV-E: five sub-networks, about 1.65M parameters at 4 bytes each, make 6.3 MB. (The
    # paper prints 6.3 MB per sub-network and 31.5 MB for five, counting the five twice.)
    assert 5 * count_parameters(model) == pytest.approx(1.65e6, rel=0.01)
    assert round(5 * storage_mb(model), 1) == 6.3
    per_layer = flops_per_layer(model, (3, 160, 160))
    by_kind = per_layer.groupby("kind")["flops"].sum()
    assert by_kind["conv"] / by_kind.sum() > 0.999  # Sec. IV-E: convolutions, 99.98%


def test_storage_counts_float_parameters_and_buffers_in_mebibytes():
    model = nn.Sequential(nn.Linear(10, 5), nn.BatchNorm2d(4))
    # 55 + 8 parameters, 8 running statistics; num_batches_tracked (int64) is not counted.
    assert storage_mb(model) == (55 + 8 + 8) * 4 / 2**20
    assert storage_mb(model.half()) == storage_mb(model)
    assert storage_mb(nn.ParameterList([nn.Parameter(torch.zeros(1_650_000))])) == \
        pytest.approx(6.29, abs=0.005)


def test_counting_leaves_modes_and_statistics_alone():
    model = ESRLab(2, 3).train()
    model.branches[1].eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flops(model, (1, 48, 48))
    conv_flops_formula(model, (1, 48, 48))
    assert model.training and model.branches[0].training and not model.branches[1].training
    assert all(not m._forward_hooks for m in model.modules())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_eval_mode_restores_on_error():
    model = nn.Sequential(nn.Dropout(), nn.Linear(2, 2)).train()
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not model.training
        raise RuntimeError
    assert model.training and model[0].training


@pytest.mark.parametrize("shape", [(1, 1, 8, 8, 0), (), (1, 8.0, 8), "1x8x8"])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError, match="one sample"):
        flops(nn.Conv2d(1, 1, 3), shape)


def scripted_clock(monkeypatch, seconds):
    """Time every timed run of steps by the next of ``seconds`` instead of the machine's
    clock (the steps still run); returns the number of steps run."""
    from fernb import complexity
    durations, steps_run = iter(seconds), []

    def timed(step, steps, device):
        for _ in range(steps):
            step()
        steps_run.append(steps)
        return next(durations)

    monkeypatch.setattr(complexity, "_timed", timed)
    return steps_run


@pytest.mark.parametrize("train", [False, True])
def test_throughput_counts_images_per_second_and_leaves_the_model_alone(train, monkeypatch):
    model = ESRLab(2, 3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    steps_run = scripted_clock(monkeypatch, [0.5])
    rate = throughput(model, (1, 48, 48), batch_size=4, steps=2, train=train)
    assert rate == 4 * 2 / 0.5 and steps_run == [2]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_throughput_rejects_bad_input():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="batch_size"):
        throughput(model, (4,), batch_size=0, steps=1)
    with pytest.raises(ValueError, match="trainable"):
        throughput(model.requires_grad_(False), (4,), batch_size=2, steps=1, train=True)


def test_measured_cost_is_relative_to_the_reference(monkeypatch):
    from fernb.complexity import measured_cost
    models = {"ref": nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(2)),
              "small": nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(2))}
    for m in models.values():
        m(torch.zeros(1, 1, 8, 8))
    # Seconds per round (ref, small): training 2.0, 1.0 | 2.0, 0.5 | 4.0, 3.0, then inference
    # 1.0, 0.25 | 1.0, 0.5 | 1.0, 0.5. Training ratios 0.5, 0.25, 0.75: median 0.5.
    steps_run = scripted_clock(monkeypatch, [2.0, 1.0, 2.0, 0.5, 4.0, 3.0,
                                             1.0, 0.25, 1.0, 0.5, 1.0, 0.5])
    table = measured_cost(models, (1, 8, 8), reference="ref", batch_size=4, steps=2,
                          repeats=3, device="cpu")
    assert steps_run == [2] * 12
    assert table.loc["ref", ["train_time_ratio", "inference_time_ratio", "flops_ratio"]].tolist() \
        == [1.0, 1.0, 1.0]
    assert table.loc["ref", "train_ratio_range"] == "1.00-1.00"
    small = table.loc["small"]
    assert (small["train_time_ratio"], small["train_ratio_range"]) == (0.5, "0.25-0.75")
    assert (small["inference_time_ratio"], small["inference_ratio_range"]) == (0.5, "0.25-0.50")
    # The same spread as numbers, for a table that formats them itself.
    assert (small["train_ratio_low"], small["train_ratio_high"]) == (0.25, 0.75)
    assert (small["inference_ratio_low"], small["inference_ratio_high"]) == (0.25, 0.5)
    # Images per second: 4 images x 2 steps over the median seconds; inference takes 8 a step.
    assert table["train_img_per_s"].tolist() == [4 * 2 / 2.0, 4 * 2 / 1.0]
    assert table["inference_img_per_s"].tolist() == [8 * 2 / 1.0, 8 * 2 / 0.5]
    assert small["flops_ratio"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="repeats"):
        measured_cost(models, (1, 8, 8), repeats=0)
