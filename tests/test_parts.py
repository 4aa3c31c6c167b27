"""Part-based networks (Wadhawan & Gandhi 2023): architecture, initialisers, ensembles and the
Sec. III-C / IV-E counts at the paper's 160x160x3 input, worked out by hand."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from fernb.complexity import (conv_flops_formula, count_keras_parameters, count_parameters,
                              flops, flops_per_layer, storage_mb)
from fernb.ensemble import SoftmaxSum
from fernb.explain import branch_maps
from fernb.models.members import Members
from fernb.models.parts import (ENSEMBLE_PARTS, LANDMARK_SETS, PartNetwork, complexity_summary,
                                expression_network, normalise_landmarks, paper_layers,
                                part_ensemble, pixel_landmarks)

IMAGE = (3, 160, 160)
# Eq. 7, 2 * C_i * k^2 * C_o * W * H, per convolution ('same', so W x H is the block's input).
CONV_FLOPS = [2 * 3 * 9 * 16 * 160 * 160, 2 * 16 * 9 * 16 * 160 * 160,    # 22,118,400 117,964,800
              2 * 16 * 9 * 32 * 80 * 80, 2 * 32 * 9 * 32 * 80 * 80,        # 58,982,400 117,964,800
              2 * 32 * 9 * 64 * 40 * 40, 2 * 64 * 9 * 64 * 40 * 40,
              2 * 64 * 9 * 128 * 20 * 20, 2 * 128 * 9 * 128 * 20 * 20]
# Eq. 9, (W / stride) * (H / stride) * C_o, per 3x3 stride-2 max-pool.
POOL_FLOPS = [80 * 80 * 16, 40 * 40 * 32, 20 * 20 * 64, 10 * 10 * 128]
# Eq. 8, 2 * I * O: the expression head 128 -> 128 -> 128 -> 8.
DENSE_FLOPS = [2 * 128 * 128, 2 * 128 * 128, 2 * 128 * 8]


def small(part="mouth", **kw):
    return PartNetwork(part=part, width=0.125, n_classes=kw.pop("n_classes", 7), **kw)


# ---------------------------------------------------------------- parameter counts (golden)

def test_extractor_parameters_by_hand():
    # conv: 9 * C_i * C_o + C_o; BN: 2 * C_o trainable (+ 2 * C_o moving statistics).
    convs = [(3, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)]
    trainable = sum(9 * ci * co + co + 2 * co for ci, co in convs)
    features = PartNetwork().features
    assert count_parameters(features) == trainable == 294_480
    assert count_keras_parameters(features) == 294_480 + 960
    # Sec. III-C: "The feature extractor has about 0.29 M parameters" (trainable count; the
    # Keras total, 295,440, would round to 0.30M).
    assert round(count_parameters(features) / 1e6, 2) == 0.29


@pytest.mark.parametrize("n_classes, expected", [(8, 34_056), (7, 33_927)])
def test_expression_head_parameters(n_classes, expected):
    # (128 * 128 + 128) * 2 + 128 * C + C; Sec. III-C: "approximately 0.035M" (CK+, C = 8).
    assert count_parameters(PartNetwork(n_classes=n_classes).head) == \
        2 * (128 * 128 + 128) + 129 * n_classes == expected


@pytest.mark.parametrize("part, outputs, expected", [
    ("eyebrows", 20, 19_092), ("eyes", 24, 19_608), ("nose", 18, 18_834),
    ("mouth", 40, 21_672), ("jaw", 34, 20_898), ("full", 136, 34_056)])
def test_landmark_heads_outputs_and_parameters(part, outputs, expected):
    # Sec. III-C2: 20, 24, 18, 40, 34 and 136 output neurons; Dense(128) -> Dense(2K) has
    # 128 * 128 + 128 + 129 * 2K parameters.
    network = PartNetwork(part=part)
    assert 2 * network.n_landmarks == outputs == network.landmark_head[-1].out_features
    assert 16_512 + 129 * outputs == expected == count_parameters(network.landmark_head)


def test_landmark_head_range_printed_in_the_paper():
    # "from 0.019M for 18 neurons (nose) to 0.025M for 136 neurons": the nose matches, the
    # 68-point head does not: 16,512 + 129 * 136 = 34,056, i.e. 0.034M, the same count as the
    # CK+ expression head that the paper calls "approximately 0.035M".
    assert round(count_parameters(PartNetwork(part="nose").landmark_head) / 1e6, 3) == 0.019
    full = count_parameters(PartNetwork(part="full").landmark_head)
    assert round(full / 1e6, 3) == 0.034 != 0.025
    assert full == count_parameters(PartNetwork(n_classes=8).head)


def test_sub_network_and_ensemble_parameters():
    el = part_ensemble("el")
    deployed = expression_network(el)
    sub = expression_network(el.networks[0])
    assert count_parameters(sub) == 294_480 + 34_056 == 328_536
    assert count_keras_parameters(sub) == 328_536 + 960 == 329_496
    assert count_parameters(deployed) == 5 * 328_536 == 1_642_680
    assert count_keras_parameters(deployed) == 5 * 329_496 == 1_647_480
    # Sec. I / IV-E: 0.33M per sub-network; Table II: 1.65M. The Keras total (with BatchNorm
    # moving statistics) rounds to 1.65M; PyTorch's trainable count to 1.64M.
    assert round(count_parameters(sub) / 1e6, 2) == round(count_keras_parameters(sub) / 1e6,
                                                          2) == 0.33
    assert round(count_keras_parameters(deployed) / 1e6, 2) == 1.65
    assert round(count_parameters(deployed) / 1e6, 2) == 1.64
    # The landmark heads are not part of the deployed network.
    heads = sum(count_parameters(n.landmark_head) for n in el.networks)
    assert count_parameters(el) == 1_642_680 + heads


def test_twenty_four_layers():
    # Sec. I: "only 24 layers": 8 convolutions, 8 BatchNorms, 4 max-pools, global average
    # pooling and 3 dense layers (activations are not counted).
    assert paper_layers(PartNetwork(part=None)) == 8 + 8 + 4 + 1 + 3 == 24


# ------------------------------------------------------------------------- FLOPs, storage

def test_flops_by_eq_7_to_9_per_layer():
    model = expression_network(PartNetwork(part="mouth", n_classes=8))
    table = flops_per_layer(model, IMAGE)
    assert table.loc[table.kind == "conv", "flops"].tolist() == CONV_FLOPS
    assert table.loc[table.kind == "maxpool", "flops"].tolist() == POOL_FLOPS
    assert table.loc[table.kind == "linear", "flops"].tolist() == DENSE_FLOPS
    by_kind = table.groupby("kind")["flops"].sum()
    assert by_kind["conv"] == sum(CONV_FLOPS) == 670_924_800
    assert by_kind["maxpool"] == sum(POOL_FLOPS) == 192_000
    assert by_kind["linear"] == sum(DENSE_FLOPS) == 67_584
    total = conv_flops_formula(model, IMAGE)
    assert total == 671_184_384
    # torch's counter has no max-pool term.
    assert flops(model, IMAGE) == total - 192_000


def test_flops_disagree_with_the_paper():
    # Sec. IV-E prints 0.555 GFLOPs per sub-network, 2.775 for five and a 99.98% share for the
    # convolutions; eqs. 7-9 on this architecture give 0.671, 3.356 and 99.96%.
    model = expression_network(PartNetwork(part="mouth", n_classes=8))
    total = conv_flops_formula(model, IMAGE)
    table = flops_per_layer(model, IMAGE)
    conv = table.loc[table.kind == "conv", "flops"].sum()
    assert round(total / 1e9, 3) == 0.671 and round(5 * total / 1e9, 3) == 3.356
    assert round(100 * conv / total, 2) == 99.96
    # Only a much smaller input would give 0.555: FLOPs scale with the image area ...
    side = 160 * math.sqrt(0.555e9 / total)
    assert 145 < side < 146
    # ... yet no square input gives it: 144 px give 0.544 GFLOPs, 145 px ('same' padding
    # rounds the pooled sizes up) already 0.574.
    assert conv_flops_formula(model, (3, 144, 144)) < 0.555e9 < \
        conv_flops_formula(model, (3, 145, 145))


def test_storage_is_the_ensembles_not_one_sub_networks():
    deployed = expression_network(part_ensemble("el"))
    # 1,647,480 float32 values = 6,589,920 bytes = 6.28 MiB: the paper's "6.3 MB" is the
    # ensemble; one sub-network is 1.26 MiB, and 5 x 6.3 = 31.5 MB counts the five twice.
    assert storage_mb(deployed) == 1_647_480 * 4 / 2**20
    assert round(storage_mb(deployed), 1) == 6.3
    assert round(storage_mb(deployed.networks[0]), 2) == 1.26
    assert round(5 * round(storage_mb(deployed), 1), 1) == 31.5


def test_complexity_summary_rows():
    table = complexity_summary()
    assert table.at["extractor", "params"] == 294_480
    assert table.at["sub-network", "params_keras"] == 329_496
    assert table.at["ensemble", "params"] == 1_642_680
    assert table.at["ensemble", "flops_formula"] == 5 * 671_184_384
    assert table.at["landmark head (full)", "params"] == 34_056
    assert table.at["landmark head (nose)", "flops"] == 2 * (128 * 128 + 128 * 18)
    assert table.at["sub-network", "flops"] == (table.at["extractor", "flops"]
                                                + table.at["expression head", "flops"])


# ------------------------------------------------------------------------ architecture

def test_activation_placement_and_same_padding():
    network = PartNetwork(part="eyes", n_classes=7)
    for block in network.features.blocks:
        for unit in block[:2]:
            assert [type(m) for m in unit] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
            assert unit[0].kernel_size == (3, 3) and unit[0].padding == (1, 1)
            assert unit[0].bias is not None
        assert isinstance(block[2], nn.MaxPool2d) and block[2].kernel_size == 3
        assert block[2].stride == 2
    # The authors' heads: dense layers without activations; softmax lives in the loss.
    assert [type(m) for m in network.head] == [nn.Linear, nn.Identity, nn.Linear, nn.Identity,
                                               nn.Linear]
    assert [type(m) for m in network.landmark_head] == [nn.Linear, nn.Identity, nn.Linear]
    relu = PartNetwork(part="eyes", head_activation="relu")
    assert [type(m) for m in relu.head] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]


@pytest.mark.parametrize("side, sizes", [(160, [80, 40, 20, 10]), (45, [23, 12, 6, 3])])
def test_same_pooling_halves_rounding_up(side, sizes):
    network = small()
    x = torch.zeros(1, 3, side, side)
    seen = []
    for block in network.features.blocks:
        x = block(x)
        seen.append(x.shape[-1])
    assert seen == sizes  # Keras 'same': ceil(n / 2)


def test_heads_without_activation_are_affine():
    network = small(head_activation="none").eval()
    f1, f2 = torch.randn(2, 16), torch.randn(2, 16)
    mix = network.head(0.3 * f1 + 0.7 * f2)
    torch.testing.assert_close(mix, 0.3 * network.head(f1) + 0.7 * network.head(f2))
    relu = small(head_activation="relu").eval()
    f1, f2 = torch.randn(8, 16), -torch.randn(8, 16).abs()
    assert not torch.allclose(relu.head(0.5 * f1 + 0.5 * f2),
                              0.5 * relu.head(f1) + 0.5 * relu.head(f2))


def test_initialisers():
    torch.manual_seed(0)
    network = PartNetwork(part="full")
    conv = network.features.blocks[3][1][0].weight  # 128 x 128 x 3 x 3, fan_in 1152
    he = math.sqrt(6 / 1152)  # He uniform: U(-sqrt(6 / fan_in), +)
    assert conv.abs().max() <= he and conv.abs().max() > 0.99 * he
    assert conv.std().item() == pytest.approx(he / math.sqrt(3), rel=0.02)
    dense = network.landmark_head[-1].weight  # 136 x 128
    glorot = math.sqrt(6 / (128 + 136))  # Glorot uniform: U(-sqrt(6 / (in + out)), +)
    assert dense.abs().max() <= glorot and dense.abs().max() > 0.99 * glorot
    assert dense.std().item() == pytest.approx(glorot / math.sqrt(3), rel=0.05)
    biases = [m.bias for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(torch.count_nonzero(b) == 0 for b in biases)


def test_width_scales_filters_and_dense_units():
    network = PartNetwork(part="nose", width=0.5)
    convs = [m.out_channels for m in network.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [8, 8, 16, 16, 32, 32, 64, 64]
    assert network.features.out_features == 64 and network.head[0].out_features == 64


def test_shapes_and_finite_outputs():
    network = small("jaw")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert network(x).shape == (2, 1, 7) and torch.isfinite(network(x)).all()
    landmarks = network.forward_landmarks(x)
    assert landmarks.shape == (2, 34) and torch.isfinite(landmarks).all()
    assert network.forward_features(x).shape == (2, 16)


@pytest.mark.parametrize("part", [*ENSEMBLE_PARTS, "full"])
def test_every_parameter_gets_a_gradient(part):
    network = small(part)
    x = torch.rand(3, 3, 32, 32)
    (network(x).sum() + network.forward_landmarks(x).sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in network.parameters())


def test_freeze_and_unfreeze_features():
    network = small()
    network.freeze_features()
    assert network.features_frozen and not network.features.training
    assert all(p.requires_grad for p in network.head.parameters())
    x = torch.rand(2, 3, 32, 32)
    network(x).sum().backward()
    assert all(p.grad is None for p in network.features.parameters())
    network.unfreeze_features()
    assert not network.features_frozen


def test_baseline_has_no_landmark_head():
    network = small(part=None)
    assert network.landmark_head is None and network.n_landmarks == 0
    with pytest.raises(RuntimeError, match="no landmark head"):
        network.forward_landmarks(torch.rand(1, 3, 32, 32))


def test_bad_arguments():
    with pytest.raises(ValueError, match="part must be one of"):
        PartNetwork(part="ears")
    with pytest.raises(ValueError, match="width"):
        PartNetwork(width=0)
    with pytest.raises(ValueError, match="n_classes"):
        PartNetwork(n_classes=1)
    with pytest.raises(ValueError, match="head_activation"):
        PartNetwork(head_activation="tanh")
    with pytest.raises(ValueError, match=r"\(batch, 3, H, W\)"):
        small()(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="kind"):
        part_ensemble("ensemble")
    with pytest.raises(ValueError, match="n_networks"):
        part_ensemble("ftl", n_networks=0)
    with pytest.raises(TypeError, match="PartNetwork"):
        expression_network(nn.Linear(2, 2))


# --------------------------------------------------------------------------- ensembles

def test_ensembles_of_five():
    el = part_ensemble("el", width=0.125, n_classes=8)
    assert isinstance(el, Members) and len(el) == 5
    assert [n.part for n in el.networks] == ["eyebrows", "eyes", "nose", "mouth", "jaw"]
    # iBUG 300-W 68-point layout, 0-based: brows 17-26, eyes 36-47, nose 27-35, mouth 48-67,
    # jaw 0-16.
    assert [n.indices for n in el.networks] == [
        tuple(range(17, 27)), tuple(range(36, 48)), tuple(range(27, 36)), tuple(range(48, 68)),
        tuple(range(0, 17))]
    ftl = part_ensemble("ftl", width=0.125).networks
    assert [n.part for n in ftl] == ["full"] * 5
    assert [n.indices for n in ftl] == [tuple(range(68))] * 5
    assert [n.part for n in part_ensemble("baseline", width=0.125).networks] == [None] * 5
    x = torch.rand(2, 3, 32, 32)
    logits = el(x)
    assert logits.shape == (2, 5, 8)
    # Eq. 4: arg-max of the class-wise sum of the members' softmax outputs.
    expected = logits.softmax(-1).sum(1).argmax(-1)
    assert torch.equal(SoftmaxSum()(logits), expected)
    torch.testing.assert_close(expression_network(el)(x), logits)


def test_members_start_different_and_reproducibly():
    a = part_ensemble("ftl", n_networks=3, width=0.125, seed=1)
    torch.rand(10)
    b = part_ensemble("ftl", n_networks=3, width=0.125, seed=1)
    first = [n.features.blocks[0][0][0].weight for n in a.networks]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(first[0], part_ensemble("ftl", n_networks=1, width=0.125,
                                                   seed=2).networks[0]
                           .features.blocks[0][0][0].weight)


def test_every_kind_of_network_k_starts_from_the_same_extractor():
    # The extractor draws its weights before the heads exist, so Baseline, FTL and EL
    # member k differ only in their heads at the start.
    kinds = [part_ensemble(kind, n_networks=5, width=0.125, seed=3)
             for kind in ("baseline", "ftl", "el")]
    for k in range(5):
        states = [model.networks[k].features.state_dict() for model in kinds]
        assert all(torch.equal(states[0][key], other[key])
                   for other in states[1:] for key in states[0])
    assert not torch.equal(kinds[0].networks[0].head[0].weight, kinds[1].networks[0].head[0].weight)


def test_cam_layer_gives_one_map_per_part():
    el = part_ensemble("el", width=0.125, n_classes=7)
    images = torch.rand(2, 3, 32, 32)
    layer = el.networks[0].cam_layer()
    assert isinstance(layer[0], nn.Conv2d) and layer[0] is el.networks[0].features.blocks[-1][1][0]
    assert el.cam_layer(3) is el.networks[3].cam_layer()
    maps = branch_maps(el, images)
    assert maps.shape == (5, 2, 32, 32)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


# ---------------------------------------------------------------- landmark coordinates

def test_normalise_landmarks_by_hand():
    points = np.zeros((68, 2), dtype=np.float32)
    points[36] = (16, 8)   # first eye point, in a 32-high, 64-wide image
    points[47] = (48, 24)  # last eye point
    out = normalise_landmarks(points, (32, 64), "eyes")
    assert out.shape == (24,)
    np.testing.assert_allclose(out[:2], [16 / 64, 8 / 32])
    np.testing.assert_allclose(out[-2:], [48 / 64, 24 / 32])
    batch = normalise_landmarks(np.stack([points, points]), (32, 64), "full")
    assert batch.shape == (2, 136)
    np.testing.assert_allclose(pixel_landmarks(batch, (32, 64))[0], points)
    assert sorted(LANDMARK_SETS) == sorted([*ENSEMBLE_PARTS, "full"])


def test_landmark_conversion_errors():
    with pytest.raises(ValueError, match="part must be one of"):
        normalise_landmarks(np.zeros((68, 2)), (32, 32), "ears")
    with pytest.raises(ValueError, match="68, 2"):
        normalise_landmarks(np.zeros((5, 2)), (32, 32), "eyes")
    with pytest.raises(ValueError, match="2K"):
        pixel_landmarks(np.zeros((2, 5)), (32, 32))


# ------------------------------------------------------------ the book's standardisation

def test_standardize_by_hand():
    from fernb.models.parts import Standardize
    layer = Standardize(2)
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    torch.testing.assert_close(layer(x), x)  # the identity until fitted
    layer.fit(x)
    # feature 1: mean 2, population s.d. 1; feature 2 is constant: its scale is the floor.
    assert layer.mean.tolist() == [2.0, 5.0] and layer.scale[0].item() == 1.0
    assert layer.scale[1].item() == pytest.approx(1e-6)
    torch.testing.assert_close(layer(x), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    assert not list(layer.parameters()) and set(layer.state_dict()) == {"mean", "scale"}
    with pytest.raises(ValueError, match="feature vectors"):
        layer.fit(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="feature vectors"):
        layer.fit(torch.zeros(4, 3))


def test_a_standardised_network_keeps_the_papers_parameters_and_counts():
    plain, book = PartNetwork(part="full"), PartNetwork(part="full", standardize=True)
    assert isinstance(plain.standardize, nn.Identity)  # the paper's network
    assert count_parameters(book) == count_parameters(plain)
    assert count_keras_parameters(book) == count_keras_parameters(plain) + 2 * 128
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    book.eval()
    features = book.forward_features(x)
    book.standardize.fit(features)
    scale = features.std(0, unbiased=False).clamp_min(1e-6)  # a dead feature: the floor
    expected = book.head((features - features.mean(0)) / scale)
    torch.testing.assert_close(book(x)[:, 0], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(expression_network(book)(x), book(x))
    # The landmark head reads the features as they are.
    torch.testing.assert_close(book.forward_landmarks(x), book.landmark_head(features))
    ensemble = part_ensemble("ftl", n_networks=2, width=0.125, standardize=True)
    assert all(not isinstance(n.standardize, nn.Identity) for n in ensemble.networks)
