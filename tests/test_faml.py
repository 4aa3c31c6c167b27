"""R18+FAML (Zhou, Xie & Tian Sec. 3.1): the network and its multiple losses (eq. 1-5)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from fernb.explain import gradcam
from fernb.losses import (MultiLoss, balanced_class_weights, zhou_cross_entropy,
                          zhou_label_smoothing)
from fernb.models.backbones import resnet18
from fernb.models.faml import (ABLATION, FACE_AREAS, FAML, AttentionBlock, FacialAreaFusion,
                               _heads, r18_faml)
from fernb.seeding import seeded


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _attention_params(d: int) -> int:
    # in_proj 3d^2 + 3d, out_proj d^2 + d, MLP d x 4d + 4d and 4d x d + d, two LayerNorms 4d
    return 12 * d * d + 13 * d


def test_parameter_counts_full_width():
    # torchvision's ResNet-18 has 11,689,512 parameters with a 1000-way fc (512 x 1000 + 1000);
    # with a 7-way fc: 11,689,512 - 513,000 + 3,591.
    r18 = 11_689_512 - 513_000 + 512 * 7 + 7
    assert _count(r18_faml(fusion=False, attention=False)) == r18 == 11_180_103
    area_convs = 2 * 64 * 3 * 7 * 7 + 2  # two 7x7 stems and two fusion weights
    assert _count(r18_faml(attention=False)) == r18 + area_convs == 11_198_921
    blocks = sum(_attention_params(d) for d in (64, 128, 256))
    model = r18_faml()
    assert _count(model.attention) == blocks == 1_038_016
    assert _count(model) == r18 + area_convs + blocks == 12_236_937


@pytest.mark.parametrize("name", sorted(ABLATION))
@pytest.mark.parametrize("size", [32, 37])
def test_shapes_and_no_nans(name, size):
    options = ABLATION[name]
    model = r18_faml(n_classes=5, width=0.25, fusion=options["fusion"],
                     attention=options["attention"])
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 1, 5)
    assert torch.isfinite(out).all()
    assert isinstance(model.net.conv1, FacialAreaFusion) == options["fusion"]
    assert len(model.attention) == (3 if options["attention"] else 0)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = r18_faml(n_classes=3, width=0.25)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_plain_r18_is_the_torchvision_network():
    model = r18_faml(n_classes=4, width=0.25, fusion=False, attention=False).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x)[:, 0], model.net(x))


def test_cam_layer_and_head():
    model = r18_faml(n_classes=4, width=0.25)
    assert model.cam_layer() is model.net.layer4
    assert model.head is model.net.fc
    maps = gradcam(model, torch.rand(2, 3, 32, 32), model.cam_layer())
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()


@pytest.mark.parametrize("attention", [True, False])
def test_cam_layer_is_the_deepest_stage_at_least_five_cells_wide(attention):
    model = r18_faml(n_classes=4, width=0.125, attention=attention)
    # 48 px: layer1 12, layer2 6, layer3 3, layer4 2 cells; 224 px: layer4 7 cells.
    expected = model.attention[1] if attention else model.net.layer2
    assert model.cam_layer(image_size=48) is expected
    assert model.cam_layer(image_size=224) is model.net.layer4
    assert model.cam_layer(image_size=16) is (model.attention[0] if attention
                                              else model.net.layer1)
    with pytest.raises(ValueError, match="member"):
        model.cam_layer(member=1)


def test_seeded_builds_are_reproducible():
    with seeded(3, 1):
        a = r18_faml(width=0.25)
    with seeded(3, 1):
        b = r18_faml(width=0.25)
    with seeded(3, 2):
        c = r18_faml(width=0.25)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.attention[0].encoder.self_attn.in_proj_weight,
                           c.attention[0].encoder.self_attn.in_proj_weight)


def test_face_areas_windows_hand_computed():
    fusion = FacialAreaFusion(nn.Conv2d(3, 8, 7, 2, 3, bias=False))
    # 112 cells: eyes rows 0.20 x 112 = 22.4 -> 22 to 0.55 x 112 = 61.6 -> 62, all columns;
    # mouth rows 61.6 -> 61 to 106.4 -> 107, columns 22.4 -> 22 to 89.6 -> 90.
    assert fusion.areas == FACE_AREAS
    assert fusion.windows(112, 112) == {"eyes": (22, 62, 0, 112), "mouth": (61, 107, 22, 90)}
    tiny = FacialAreaFusion(nn.Conv2d(3, 8, 7, 2, 3), {"dot": (0.99, 1.0, 0.0, 0.01)})
    assert tiny.windows(4, 4) == {"dot": (3, 4, 0, 1)}  # at least one cell


def test_fusion_is_the_weighted_sum_of_the_area_maps():
    # main: 1x1 convolution with stride 2 and weight 1 -> x[::2, ::2]
    main = nn.Conv2d(1, 1, 1, stride=2, bias=False)
    nn.init.ones_(main.weight)
    fusion = FacialAreaFusion(main, {"low_left": (0.5, 1.0, 0.0, 0.5)}, area_weight=0.5)
    x = torch.arange(64.0).view(1, 1, 8, 8)
    base = x[:, :, ::2, ::2]
    expected = base.clone()
    expected[:, :, 2:, :2] *= 1.5  # the area's copy of the main conv, weight 0.5
    assert torch.equal(fusion(x), expected)
    with torch.no_grad():
        fusion.area_convs["low_left"].weight.fill_(3.0)
    expected = base.clone()
    expected[:, :, 2:, :2] *= 2.5  # 1 + 0.5 x 3
    assert torch.equal(fusion(x), expected)


def test_area_maps_lie_on_the_main_grid():
    # A 7x7 stride-2 copy of the main convolution on a crop reproduces the main map inside the
    # area, away from the crop's border (where zero padding replaces the neighbouring pixels).
    torch.manual_seed(0)
    main = nn.Conv2d(3, 4, 7, 2, 3, bias=False)
    fusion = FacialAreaFusion(main, {"a": (0.25, 1.0, 0.25, 1.0)}, area_weight=1.0)
    x = torch.randn(1, 3, 32, 32)
    (r0, r1, c0, c1), = fusion.windows(16, 16).values()
    assert (r0, r1, c0, c1) == (4, 16, 4, 16)
    doubled = fusion(x)[:, :, r0 + 2:, c0 + 2:]
    assert torch.allclose(doubled, 2 * main(x)[:, :, r0 + 2:, c0 + 2:], atol=1e-5)
    assert torch.equal(fusion(x)[:, :, :r0], main(x)[:, :, :r0])


def test_area_init():
    main = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
    copied = FacialAreaFusion(main, area_init="copy")
    fresh = FacialAreaFusion(main, area_init="fresh")
    for name in FACE_AREAS:
        assert torch.equal(copied.area_convs[name].weight, main.weight)
        assert copied.area_convs[name].weight is not main.weight
        assert not torch.equal(fresh.area_convs[name].weight, main.weight)


def test_pretrained_weights_load_before_the_areas_copy_them(tmp_path):
    with seeded(5, 0):
        source = resnet18(n_classes=7)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": source.net.state_dict()}, path)
    model = r18_faml(n_classes=7, weights=path)
    assert torch.equal(model.net.conv1.main.weight, source.net.conv1.weight)
    assert torch.equal(model.net.conv1.area_convs["mouth"].weight, source.net.conv1.weight)
    assert torch.equal(model.net.layer4[1].conv2.weight, source.net.layer4[1].conv2.weight)


def test_attention_block_is_residual_self_attention_over_positions():
    torch.manual_seed(0)
    block = AttentionBlock(16, head_dim=8).eval()
    assert block.encoder.self_attn.num_heads == 2
    x = torch.randn(2, 16, 3, 5)
    out = block(x)
    assert out.shape == x.shape and not torch.allclose(out, x)
    # No position embedding: permuting the positions permutes the output.
    perm = torch.randperm(15)
    shuffled = x.flatten(2)[:, :, perm].view_as(x)
    assert torch.allclose(block(shuffled).flatten(2), out.flatten(2)[:, :, perm], atol=1e-5)
    # Both branches are residual: with their last projections zeroed the block is the identity.
    with torch.no_grad():
        for layer in (block.encoder.self_attn.out_proj, block.encoder.linear2):
            layer.weight.zero_()
            layer.bias.zero_()
    assert torch.equal(block(x), x)


def test_attention_block_computes_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    block = AttentionBlock(8).eval()
    x = torch.randn(2, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = block(x.bfloat16())
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, block(x.bfloat16().float()), atol=1e-6)


@pytest.mark.parametrize("channels,heads", [(64, 2), (128, 4), (256, 8), (16, 1), (96, 3),
                                            (100, 2)])
def test_heads(channels, heads):
    assert _heads(channels, 32) == heads


def test_bad_arguments():
    conv = nn.Conv2d(3, 8, 7, 2, 3)
    with pytest.raises(ValueError, match="top < bottom"):
        FacialAreaFusion(conv, {"x": (0.6, 0.5, 0.0, 1.0)})
    with pytest.raises(ValueError, match="top, bottom, left, right"):
        FacialAreaFusion(conv, {"x": (0.1, 0.5)})
    with pytest.raises(ValueError, match="non-empty mapping"):
        FacialAreaFusion(conv, {})
    with pytest.raises(ValueError, match="area_init"):
        FacialAreaFusion(conv, area_init="zeros")
    with pytest.raises(TypeError, match="nn.Conv2d"):
        FacialAreaFusion(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="mlp_ratio"):
        AttentionBlock(16, mlp_ratio=0)
    with pytest.raises(ValueError, match="head_dim"):
        r18_faml(width=0.25, head_dim=0)
    assert isinstance(r18_faml(width=0.25), FAML)


# Zhou eq. (1)-(5). Logits (0, ln 2, 0) give q = (1/4, 1/2, 1/4).
Q_LOGITS = torch.tensor([[[0.0, math.log(2), 0.0]], [[0.0, math.log(2), 0.0]]])  # (2, 1, 3)
LABELS = torch.tensor([1, 0])
LN2, LN4 = math.log(2), math.log(4)


def test_cross_entropy_eq1_2_hand_computed():
    # -ln q_y: label 1 -> ln 2, label 0 -> ln 4; batch mean
    assert zhou_cross_entropy(Q_LOGITS, LABELS).item() == pytest.approx((LN2 + LN4) / 2)
    # class weights (2, 1, 1): (1 x ln 2 + 2 x ln 4) / (1 + 2)
    w = torch.tensor([2.0, 1.0, 1.0])
    assert zhou_cross_entropy(Q_LOGITS, LABELS, w).item() == pytest.approx((LN2 + 2 * LN4) / 3)
    # two identical members: the sum over members
    two = Q_LOGITS.expand(2, 2, 3)
    assert zhou_cross_entropy(two, LABELS).item() == pytest.approx(LN2 + LN4)


def test_label_smoothing_eq4_5_hand_computed():
    # epsilon 0.1, C = 3: p = 0.9 on the label, 0.05 on the two others
    label1 = 0.05 * LN4 + 0.9 * LN2 + 0.05 * LN4  # 0.762462
    label0 = 0.9 * LN4 + 0.05 * LN2 + 0.05 * LN4  # 1.351637
    smoothed = zhou_label_smoothing(Q_LOGITS, LABELS, 0.1).item()
    assert smoothed == pytest.approx((label1 + label0) / 2)
    assert smoothed == pytest.approx(1.0570494, abs=1e-6)
    # torch's label_smoothing=0.1 would give the label 0.9333 and the others 0.0333
    torch_style = torch.nn.functional.cross_entropy(Q_LOGITS[:, 0], LABELS, label_smoothing=0.1)
    assert torch_style.item() != pytest.approx((label1 + label0) / 2)
    assert zhou_label_smoothing(Q_LOGITS, LABELS, 0.0).item() == pytest.approx((LN2 + LN4) / 2)
    with pytest.raises(ValueError, match="epsilon"):
        zhou_label_smoothing(Q_LOGITS, LABELS, 0.7)  # more than (C - 1) / C = 2/3


def test_balanced_class_weights_hand_computed():
    # N = 4, C = 2: w_0 = 4 / (2 x 3), w_1 = 4 / (2 x 1)
    w = balanced_class_weights(np.array([0, 0, 0, 1]), 2)
    assert w.tolist() == pytest.approx([2 / 3, 2.0])
    assert balanced_class_weights(torch.tensor([0, 1, 1, 2]), 3).tolist() == pytest.approx(
        [4 / 3, 2 / 3, 4 / 3])
    with pytest.raises(ValueError, match=r"classes \[2\]"):
        balanced_class_weights(np.array([0, 1]), 3)


def test_multi_loss_picks_one_loss_per_batch_not_the_sum():
    loss = MultiLoss(p_lsr=0.8, epsilon=0.1)
    lsr = zhou_label_smoothing(Q_LOGITS, LABELS, 0.1).item()
    ce = zhou_cross_entropy(Q_LOGITS, LABELS).item()
    torch.manual_seed(0)
    values = np.array([loss(Q_LOGITS, LABELS).item() for _ in range(500)])
    is_lsr, is_ce = np.isclose(values, lsr), np.isclose(values, ce)
    assert (is_lsr | is_ce).all()  # never 0.8 LSR + 0.2 CE
    assert loss.counts == {"lsr": int(is_lsr.sum()), "ce": int(is_ce.sum())}
    assert abs(is_lsr.mean() - 0.8) < 0.07  # binomial sd 0.018
    torch.manual_seed(0)
    again = MultiLoss(p_lsr=0.8)
    assert [again(Q_LOGITS, LABELS).item() for _ in range(500)] == values.tolist()


def test_multi_loss_evaluates_the_expectation_without_drawing():
    loss = MultiLoss(p_lsr=0.2, class_weights=torch.tensor([2.0, 1.0, 1.0]))
    lsr = zhou_label_smoothing(Q_LOGITS, LABELS, 0.1).item()
    wce = (LN2 + 2 * LN4) / 3  # only the cross-entropy is class-weighted
    state = torch.get_rng_state()
    with torch.no_grad():
        value = loss(Q_LOGITS, LABELS).item()
    assert torch.equal(torch.get_rng_state(), state)
    assert value == pytest.approx(0.2 * lsr + 0.8 * wce)
    assert MultiLoss(p_lsr=0.2, class_weights=torch.tensor([2.0, 1.0, 1.0]), mix="sum")(
        Q_LOGITS, LABELS).item() == pytest.approx(0.2 * lsr + 0.8 * wce)
    assert loss.counts == {"lsr": 0, "ce": 0}


def test_multi_loss_gradients_and_errors():
    logits = Q_LOGITS.clone().requires_grad_(True)
    MultiLoss(p_lsr=1.0)(logits, LABELS).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="p_lsr"):
        MultiLoss(p_lsr=1.2)
    with pytest.raises(ValueError, match="mix"):
        MultiLoss(mix="weighted")
    with pytest.raises(ValueError, match="epsilon"):
        MultiLoss(epsilon=1.0)
    with pytest.raises(ValueError, match="class_weights"):
        MultiLoss(class_weights=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="2 entries"):
        MultiLoss(p_lsr=0.0, class_weights=[1.0, 1.0])(Q_LOGITS, LABELS)
