"""Relevance-map network, baseline, target maps and the relevance losses (Ferreira et al. 2018,
eqs. 1-7)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fernb.complexity import count_parameters
from fernb.data.transforms import RelevanceAugmentation
from fernb.explain import gradcam
from fernb.losses import (RelevanceLoss, relevance_contiguity, relevance_mse,
                          relevance_sparsity)
from fernb.models.members import Members
from fernb.models.relevance import (PAPER_TRAINING, BaselineCNN, EBlock, RelevanceNet,
                                    fit_relevance, gate, target_maps)
from fernb.train import FitConfig, adam, fit

SMALL = dict(width=0.125, hidden=(16, 16))


@pytest.mark.parametrize("size,chans", [(48, 1), (96, 1), (48, 3)])
def test_shapes_and_finite_outputs(size, chans):
    torch.manual_seed(0)
    x = torch.rand(2, chans, size, size)
    net = RelevanceNet(image_size=size, in_chans=chans, n_classes=7, **SMALL)
    logits, relevance = net.forward_with_map(x)
    assert logits.shape == (2, 1, 7) and relevance.shape == (2, 1, size, size)
    assert torch.isfinite(logits).all() and torch.isfinite(relevance).all()
    torch.testing.assert_close(net(x), logits)
    base = BaselineCNN(image_size=size, in_chans=chans, n_classes=7, **SMALL)
    assert base(x).shape == (2, 1, 7) and torch.isfinite(base(x)).all()
    assert net.forward_features(x).shape == base.forward_features(x).shape
    assert net.forward_features(x).shape[-2:] == (size // 8, size // 8)


def test_parameter_counts_of_the_default_architecture():
    # Representation, filters 32-64-128 then two e-blocks of 128 (3x3 convolutions, bias):
    rep = (1 * 9 * 32 + 32) + (32 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 9 * 64 + 64) \
        + (64 * 9 * 128 + 128) + (128 * 9 * 128 + 128) + 2 * (128 * 9 * 128 + 128)
    assert count_parameters(BaselineCNN(image_size=48).representation) == rep == 581_600
    # Classification at 48 px: 6 x 6 x 128 = 4608 -> 512 -> 512 -> 8.
    dense48 = (4608 * 512 + 512) + (512 * 512 + 512) + (512 * 8 + 8)
    # Facial parts: encoder as the first six convolutions; decoder 2x2 transposed
    # convolutions 128->128, 128->64, 64->32, each with two 3x3 convolutions; head 32->1.
    parts = 286_432 + (128 * 4 * 128 + 128) + 2 * (128 * 9 * 128 + 128) \
        + (128 * 4 * 64 + 64) + 2 * (64 * 9 * 64 + 64) + (64 * 4 * 32 + 32) \
        + 2 * (32 * 9 * 32 + 32) + (32 * 9 + 1)
    assert count_parameters(BaselineCNN(image_size=48)) == rep + dense48 == 3_208_168
    net = RelevanceNet(image_size=48)
    assert count_parameters(net.facial_parts) == parts == 780_961
    assert count_parameters(net) == rep + dense48 + parts == 3_989_129
    # At 96 px only the first dense layer grows: 12 x 12 x 128 = 18432 inputs.
    assert count_parameters(BaselineCNN(image_size=96)) == rep + 18432 * 512 + 512 \
        + (512 * 512 + 512) + (512 * 8 + 8) == 10_286_056
    # width scales the convolutions, not the dense layers: 4 - 8 - 16 filters at width 1/8.
    small = BaselineCNN(image_size=48, width=0.125)
    assert small.representation.blocks[2][0][0].out_channels == 16
    assert small.classifier[1].in_features == 16 * 36 and small.classifier[1].out_features == 512


def test_every_parameter_receives_a_gradient():
    torch.manual_seed(0)
    x, labels = torch.rand(3, 1, 48, 48), torch.tensor([0, 1, 2])
    maps = torch.rand(3, 1, 48, 48)
    net = RelevanceNet(image_size=48, n_classes=3, skip_connections=True, map_start=None,
                       **SMALL)
    RelevanceLoss("hybrid")(net.forward_with_map(x), (labels, maps)).backward()
    base = BaselineCNN(image_size=48, n_classes=3, **SMALL)
    F.cross_entropy(base(x)[:, 0], labels).backward()
    for model in (net, base):
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
        assert not missing


def test_classification_gradients_reach_the_facial_parts_through_the_eblocks():
    torch.manual_seed(0)
    net = RelevanceNet(image_size=48, n_classes=3, **SMALL)
    out = net.forward_with_map(torch.rand(2, 1, 48, 48))
    F.cross_entropy(out[0][:, 0], torch.tensor([0, 1])).backward()  # no map term at all
    assert net.facial_parts.head.weight.grad.abs().sum() > 0


def _identity_block(gate):
    block = EBlock(1, 1, padding=1, stride=1, gate=gate)
    with torch.no_grad():
        block.conv.weight.zero_()
        block.conv.weight[0, 0, 1, 1] = 1.0  # identity convolution
        block.conv.bias.fill_(0.5)
    return block


def test_eblock_is_eq1_on_a_hand_computed_example():
    a = torch.tensor([[[[-1.0, 2.0], [3.0, -4.0]]]])
    relevance = torch.tensor([[[[0.5, 2.0], [1.0, 3.0]]]])
    literal = _identity_block("literal")
    # ReLU(a + 0.5) = [[0, 2.5], [3.5, 0]], times x_hat = [[0, 5], [3.5, 0]].
    torch.testing.assert_close(literal(a, relevance), torch.tensor([[[[0.0, 5.0], [3.5, 0.0]]]]))
    torch.testing.assert_close(literal(a), torch.tensor([[[[0.0, 2.5], [3.5, 0.0]]]]))
    # The mean gate divides x_hat by its mean magnitude (0.5 + 2 + 1 + 3) / 4 = 1.625:
    # [[0, 5 / 1.625], [3.5 / 1.625, 0]].
    mean = _identity_block("mean")
    torch.testing.assert_close(mean(a, relevance),
                               torch.tensor([[[[0.0, 5 / 1.625], [3.5 / 1.625, 0.0]]]]))
    torch.testing.assert_close(gate(relevance, (2, 2), 1, "mean").abs().mean(),
                               torch.tensor(1.0))


def test_the_mean_gate_keeps_the_features_scale_where_the_literal_one_shrinks_them():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 48, 48)
    net = RelevanceNet(image_size=48, n_classes=3, seed=0, **SMALL)
    literal = RelevanceNet(image_size=48, n_classes=3, seed=0, gate="literal", **SMALL)
    literal.load_state_dict(net.state_dict())
    start = net.forward_features(x)
    for model in (net, literal):
        with torch.no_grad():  # a constant map of 0.2, the mean of a landmark target
            model.facial_parts.head.bias.fill_(0.2)
    # Two e-blocks multiply by 0.2 each: the literal features shrink 25-fold; the mean gate
    # divides the map by its own mean and leaves them as they were.
    torch.testing.assert_close(net.forward_features(x), start)
    torch.testing.assert_close(literal.forward_features(x), 0.04 * start, rtol=1e-4, atol=1e-6)
    assert net.gate == "mean" and literal.gate == "literal"
    with pytest.raises(ValueError, match="gate must be one of"):
        RelevanceNet(image_size=48, gate="max", **SMALL)


def test_eblocks_can_sit_after_an_earlier_block():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 48, 48)
    net = RelevanceNet(image_size=48, n_classes=3, eblock_after=1, **SMALL)
    # After block 1 (4 filters at width 1/8, stride 2), then blocks 2 and 3.
    assert [e.conv.in_channels for e in net.representation.eblocks] == [4, 4]
    assert all(e.stride == 2 for e in net.representation.eblocks)
    assert net.forward_features(x).shape == (2, 16, 6, 6)
    assert net(x).shape == (2, 1, 3)
    # Valid padding: block 1 48 -> 44 -> 22, the e-blocks 22 -> 18, block 2 -> 14 -> 7,
    # block 3 -> 3 -> 1; two more e-blocks would leave nothing.
    valid = BaselineCNN(image_size=48, padding="valid", eblock_after=1, **SMALL)
    assert valid.forward_features(x).shape[-2:] == (1, 1)
    with pytest.raises(ValueError, match="vanishes"):
        BaselineCNN(image_size=48, padding="valid", eblock_after=1, n_eblocks=4, **SMALL)
    with pytest.raises(ValueError, match="eblock_after must name a block 1..3"):
        BaselineCNN(image_size=48, eblock_after=4, **SMALL)


def test_relevance_is_pooled_and_centre_cropped_to_the_feature_map():
    x_hat = torch.arange(16.0).view(1, 1, 4, 4)
    # 2x2 block means: (0+1+4+5)/4 = 2.5, 4.5, 10.5, 12.5.
    torch.testing.assert_close(fit_relevance(x_hat, (2, 2), 2),
                               torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    x_hat = torch.arange(36.0).view(1, 1, 6, 6)
    # stride 2 -> 3x3 of block means; the centre one is (14+15+20+21)/4 = 17.5.
    torch.testing.assert_close(fit_relevance(x_hat, (1, 1), 2), torch.tensor([[[[17.5]]]]))
    assert torch.equal(fit_relevance(x_hat, (6, 6), 1), x_hat)
    with pytest.raises(ValueError, match="smaller than the feature map"):
        fit_relevance(x_hat, (4, 4), 2)


def test_a_zero_relevance_map_silences_the_representation():
    torch.manual_seed(0)
    net = RelevanceNet(image_size=48, n_classes=4, **SMALL)
    with torch.no_grad():
        net.facial_parts.head.weight.zero_()
        net.facial_parts.head.bias.zero_()
    a, b = net(torch.rand(1, 1, 48, 48)), net(torch.rand(1, 1, 48, 48))
    torch.testing.assert_close(a, b)  # only the dense layers' biases remain
    assert torch.count_nonzero(net.forward_features(torch.rand(1, 1, 48, 48))) == 0


def test_map_activation_and_valid_padding_variants():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 96, 96)
    sig = RelevanceNet(image_size=96, map_activation="sigmoid", map_start=None, **SMALL)
    relevance = sig.forward_with_map(x)[1]
    assert relevance.min() > 0 and relevance.max() < 1
    lin = RelevanceNet(image_size=96, map_start=None, **SMALL).forward_with_map(x)[1]
    assert lin.min() < 0  # the paper's linear output can be negative
    valid = RelevanceNet(image_size=96, padding="valid", **SMALL)
    # 96 -> 92 -> 46 -> 42 -> 21 -> 17 -> 8 -> e-blocks 6 -> 4.
    assert valid.forward_features(x).shape[-2:] == (4, 4)
    assert valid(x).shape == (2, 1, 8)


def test_same_seed_gives_the_baseline_and_the_proposed_network_the_same_start():
    net = RelevanceNet(image_size=48, seed=3, **SMALL)
    base = BaselineCNN(image_size=48, seed=3, **SMALL)
    for (name, p), (_, q) in zip(net.representation.named_parameters(),
                                 base.representation.named_parameters()):
        assert torch.equal(p, q), name
    assert torch.equal(net.classifier[-1].weight, base.classifier[-1].weight)
    other = BaselineCNN(image_size=48, seed=4, **SMALL)
    assert not torch.equal(other.classifier[-1].weight, base.classifier[-1].weight)
    members = Members.build(lambda: BaselineCNN(image_size=48, **SMALL), 2, seed=0)
    w0, w1 = (m.classifier[-1].weight for m in members.networks)
    assert not torch.equal(w0, w1)  # seed=None draws from each member's own stream


def test_the_map_starts_at_one_so_the_network_starts_as_the_baseline():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 48, 48)
    net = RelevanceNet(image_size=48, seed=5, **SMALL)
    logits, relevance = net.forward_with_map(x)
    assert torch.equal(relevance, torch.ones_like(relevance))
    torch.testing.assert_close(logits, BaselineCNN(image_size=48, seed=5, **SMALL)(x))
    half = RelevanceNet(image_size=48, map_activation="sigmoid", map_start=0.5, **SMALL)
    torch.testing.assert_close(half.forward_with_map(x)[1], torch.full((3, 1, 48, 48), 0.5))
    with pytest.raises(ValueError, match="map_start must lie in \\(0, 1\\)"):
        RelevanceNet(image_size=48, map_activation="sigmoid", **SMALL)


def test_kaiming_initialisation_and_torch_defaults():
    net = RelevanceNet(image_size=48, width=0.5, map_start=None, seed=0)
    conv = net.representation.blocks[1][0][0]  # 16 -> 16 channels, fan-in 16 * 9 = 144
    # He-normal: standard deviation sqrt(2 / fan_in) = sqrt(2 / 144) = 0.1179.
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / 144), rel=0.05)
    assert not conv.bias.any() and not net.facial_parts.head.bias.any()
    dense = net.classifier[3]  # 512 -> 512: sqrt(2 / 512) = 0.0625
    assert float(dense.weight.detach().std()) == pytest.approx(0.0625, rel=0.02)
    default = BaselineCNN(image_size=48, width=0.5, init="torch", seed=0)
    conv = default.representation.blocks[1][0][0]
    # PyTorch's kaiming_uniform(a=sqrt(5)): bound 1 / sqrt(fan_in), std = bound / sqrt(3).
    assert float(conv.weight.detach().std()) == pytest.approx(1 / math.sqrt(144) / math.sqrt(3), rel=0.05)
    assert conv.bias.any()
    with pytest.raises(ValueError, match="init must be one of"):
        BaselineCNN(image_size=48, init="xavier")


def test_the_baseline_has_no_relevance_map():
    base = BaselineCNN(image_size=48, **SMALL)
    assert not hasattr(base, "forward_with_map") and not hasattr(base, "facial_parts")
    assert isinstance(RelevanceNet(image_size=48, **SMALL), BaselineCNN)


def test_gradcam_is_taken_before_the_map_multiplies_the_features():
    torch.manual_seed(0)
    net = RelevanceNet(image_size=48, n_classes=3, **SMALL)
    # The block the e-blocks follow: its output has not met x_hat yet.
    assert net.cam_layer() is net.cam_layer(0, 48) is net.representation.blocks[-1]
    assert net.gated_layer() is net.representation.eblocks[-1]
    early = RelevanceNet(image_size=48, eblock_after=2, **SMALL)
    assert early.cam_layer() is early.representation.blocks[1]
    maps = gradcam(net, torch.rand(2, 1, 48, 48), member=0)
    assert maps.shape == (2, 48, 48) and np.isfinite(maps).all()
    # A map that is zero on the left half: after the products the left half is silent, so
    # Grad-CAM of the gated layer is zero there, while before the products it is not.
    x = torch.rand(4, 1, 48, 48)
    with torch.no_grad():
        net.facial_parts.head.weight.zero_()
        net.facial_parts.head.bias.fill_(1.0)
    half = torch.ones(1, 1, 48, 48)
    half[..., :24] = 0.0
    net.facial_parts.register_forward_hook(lambda module, inputs, output: half.expand_as(output))
    for target in range(3):
        after = gradcam(net, x, net.gated_layer(), member=0, targets=target)
        assert after[:, :, :20].max() == 0
    before = np.stack([gradcam(net, x, member=0, targets=c) for c in range(3)])
    assert before[..., :20].max() > 0


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="width must be positive"):
        BaselineCNN(image_size=48, width=0)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*parts_blocks = 32"):
        RelevanceNet(image_size=48, parts_blocks=5)
    with pytest.raises(ValueError, match="too small"):
        BaselineCNN(image_size=48, padding="valid")
    with pytest.raises(ValueError, match="padding must be one of"):
        BaselineCNN(image_size=48, padding="full")
    with pytest.raises(ValueError, match="map_activation"):
        RelevanceNet(image_size=48, map_activation="relu", map_start=None, **SMALL)
    with pytest.raises(ValueError, match="n_eblocks"):
        BaselineCNN(image_size=48, n_eblocks=0)
    with pytest.raises(ValueError, match="dropout"):
        BaselineCNN(image_size=48, dropout=1.0)
    net = RelevanceNet(image_size=48, **SMALL)
    with pytest.raises(ValueError, match="expected input \\(batch, 1, 48, 48\\)"):
        net(torch.rand(1, 1, 96, 96))


def test_dropout_layers_only_when_asked():
    with_dropout = BaselineCNN(image_size=48, dropout=0.5, **SMALL)
    assert sum(isinstance(m, torch.nn.Dropout) for m in with_dropout.modules()) == 2
    plain = BaselineCNN(image_size=48, **SMALL)
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())


def test_target_maps_are_peak_one_gaussians_at_the_landmarks():
    points = np.array([[[3.0, 2.0], [5.0, 2.0]]])  # two landmarks 2 px apart
    maps = target_maps(points, (6, 8), sigma=1.0)
    assert maps.shape == (1, 1, 6, 8) and maps.dtype == torch.float32
    assert float(maps[0, 0, 2, 3]) == pytest.approx(1.0) and float(maps.max()) == pytest.approx(1.0)
    # Between them, each Gaussian is exp(-1/2) = 0.6065: max keeps it, sum doubles it.
    assert float(maps[0, 0, 2, 4]) == pytest.approx(math.exp(-0.5), rel=1e-5)
    summed = target_maps(points, (6, 8), sigma=1.0, combine="sum")
    assert float(summed[0, 0, 2, 4]) == pytest.approx(2 * math.exp(-0.5), rel=1e-5)
    # Default sigma: 1/40 of the side, 1.2 px at 48 px: one pixel away exp(-1 / 2.88).
    default = target_maps(np.array([[[10.0, 10.0]]]), 48)
    assert float(default[0, 0, 10, 11]) == pytest.approx(math.exp(-1 / (2 * 1.2**2)), rel=1e-5)
    chunked = target_maps(np.tile(points, (5, 1, 1)), 8, sigma=1.0, chunk=2)
    assert chunked.shape == (5, 1, 8, 8) and torch.equal(chunked[0], chunked[4])
    with pytest.raises(ValueError, match="\\(N, K, 2\\)"):
        target_maps(points[0], 8)
    with pytest.raises(ValueError, match="combine"):
        target_maps(points, 8, combine="mean")


def test_total_variation_has_no_gradient_on_a_constant_map():
    """Eq. (7) alone cannot move the starting map: every constant map has zero total
    variation and a zero (sub)gradient, so the contiguity-only variant is moved by the
    cross-entropy alone."""
    for value in (1.0, 0.1):
        flat = torch.full((2, 1, 8, 8), value, requires_grad=True)
        relevance_contiguity(flat).sum().backward()
        assert relevance_contiguity(flat).abs().max() == 0 and flat.grad.abs().max() == 0
    bumpy = torch.full((1, 1, 8, 8), 1.0)
    bumpy[..., 3, 3] = 2.0
    bumpy.requires_grad_(True)
    relevance_contiguity(bumpy).sum().backward()
    assert bumpy.grad.abs().max() > 0


def test_paper_training_settings():
    assert PAPER_TRAINING.optimizer == "adam" and PAPER_TRAINING.batch_size == 50
    assert PAPER_TRAINING.hidden == (512, 512) and PAPER_TRAINING.image_size == 120
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = PAPER_TRAINING.schedule()(opt)
    for _ in range(2):
        opt.step()
        schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.99 * 0.99)


# Relevance losses on one 2x2 map, by hand:
#   x_hat = [[1, -2], [0, 3]], target = [[1, 0], [0, 1]]
#   eq. (6): (1 + 2 + 0 + 3) / 4 = 1.5
#   eq. (7): rows |0 - 1| + |3 - (-2)| = 6, columns |-2 - 1| + |3 - 0| = 6 -> 12 / 4 = 3.0
#   eq. (4): squared errors 0, 4, 0, 4 -> mean 2.0, sum 8.0
#   eq. (3): logits (0, ln 3), label 0 -> -log(1 / 4) = ln 4
MAP = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]]]])
TARGET = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
LOGITS = torch.tensor([[[0.0, math.log(3.0)]]])
LABEL = torch.tensor([0])


def test_each_relevance_term_on_a_hand_computed_map():
    assert float(relevance_sparsity(MAP)[0]) == pytest.approx(1.5)
    assert float(relevance_contiguity(MAP)[0]) == pytest.approx(3.0)
    assert float(relevance_mse(MAP, TARGET)[0]) == pytest.approx(2.0)
    assert float(relevance_mse(MAP, TARGET[:, 0], reduction="sum")[0]) == pytest.approx(8.0)
    # A 3x1 column: rows |2 - 0| + |2 - 2| = 2, no column differences -> 2 / 3.
    assert float(relevance_contiguity(torch.tensor([[[[0.0], [2.0], [2.0]]]]))[0]) \
        == pytest.approx(2 / 3)
    assert float(relevance_contiguity(torch.full((1, 1, 4, 4), 7.0))[0]) == 0.0


@pytest.mark.parametrize("mode,expected", [
    ("fully", math.log(4) + 10 * 2.0),
    ("weakly", math.log(4) + 0.5 * (1.5 + 2 * 3.0)),
    ("hybrid", math.log(4) + 10 * 2.0 + 0.5 * (1.5 + 2 * 3.0)),
    ("sparsity", math.log(4) + 0.5 * 1.5),
    ("contiguity", math.log(4) + 0.5 * 2 * 3.0),
])
def test_relevance_loss_modes_by_hand(mode, expected):
    loss = RelevanceLoss(mode, lambda_fully=10.0, lambda_weakly=0.5, gamma=2.0)
    assert float(loss((LOGITS, MAP), (LABEL, TARGET))) == pytest.approx(expected, rel=1e-6)


def test_relevance_loss_is_a_batch_mean_and_weakly_needs_no_target_maps():
    loss = RelevanceLoss("weakly", lambda_weakly=1.0, gamma=1.0)
    single = float(loss((LOGITS, MAP), LABEL))
    assert single == pytest.approx(math.log(4) + 1.5 + 3.0)
    maps = torch.cat([MAP, torch.zeros_like(MAP)])  # second image: no sparsity, no TV
    logits = torch.cat([LOGITS, torch.zeros_like(LOGITS)])  # second image: CE = ln 2
    batch = float(loss((logits, maps), (torch.tensor([0, 1]), torch.zeros(2, 1, 2, 2))))
    assert batch == pytest.approx((math.log(4) + math.log(2)) / 2 + (1.5 + 3.0) / 2)
    terms = RelevanceLoss("hybrid").terms((LOGITS, MAP), (LABEL, TARGET))
    assert set(terms) == {"classification", "mse", "sparsity", "contiguity"}
    assert RelevanceLoss("fully").needs_target_maps and not loss.needs_target_maps


def test_relevance_loss_errors():
    with pytest.raises(ValueError, match="needs target maps"):
        RelevanceLoss("fully")((LOGITS, MAP), LABEL)
    with pytest.raises(ValueError, match="forward_with_map"):
        RelevanceLoss("weakly")(LOGITS, LABEL)
    with pytest.raises(ValueError, match="mode must be one of"):
        RelevanceLoss("supervised")
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        RelevanceLoss("weakly", gamma=-1)
    with pytest.raises(ValueError, match="do not match"):
        RelevanceLoss("fully")((LOGITS, MAP), (LABEL, torch.zeros(1, 1, 3, 3)))


def test_fit_trains_the_network_with_maps_and_paired_augmentation():
    torch.manual_seed(0)
    x, labels = torch.rand(8, 1, 48, 48), torch.arange(8) % 3
    maps = target_maps(np.random.default_rng(0).uniform(8, 40, (8, 68, 2)), 48)
    data = torch.utils.data.TensorDataset(x, labels, maps)
    net = RelevanceNet(image_size=48, n_classes=3, seed=0, **SMALL)
    before = net.facial_parts.head.weight.detach().clone()
    history = fit(net, data, data, FitConfig(
        epochs=2, optimizer=adam(1e-3), batch_size=4, forward="forward_with_map",
        loss=RelevanceLoss("hybrid"), augment=RelevanceAugmentation(),
        schedule=PAPER_TRAINING.schedule(), device="cpu"))
    frame = history.to_frame()
    assert len(frame) == 2 and np.isfinite(frame["train_loss"]).all()
    assert frame["lr"].iloc[-1] == pytest.approx(1e-3 * 0.99**2)
    assert not torch.equal(before, net.facial_parts.head.weight)
