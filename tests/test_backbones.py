"""torchvision backbones: exact architectures at width 1, narrow shapes, weights by path."""
import pytest
import torch
import torchvision

from fernb.complexity import count_parameters
from fernb.explain import gradcam
from fernb.models.backbones import (BACKBONES, VGG_FACE_LAYERS, VGGFaceInput, build_backbone,
                                    densenet121, load_weights, resnet18, vgg16,
                                    vgg_face_state_dict)
from fernb.models.members import Members
from fernb.seeding import seeded

# Trainable parameters with a 7-way head, by hand from torchvision's ImageNet counts
# (1000-way heads): resnet18 11,689,512 - (512*1000 + 1000) + (512*7 + 7), and so on.
GOLDEN_7 = {
    "resnet18": 11_689_512 - 513_000 + 3_591,
    "resnet34": 21_797_672 - 513_000 + 3_591,
    "vgg16": 138_357_544 - 4_097_000 + 28_679,
    "densenet121": 7_978_856 - 1_025_000 + 7_175,
}
# First convolution's output channels and kernel area: in_chans=1 drops 2 * out * k * k.
STEM = {"resnet18": 64 * 49, "resnet34": 64 * 49, "vgg16": 64 * 9, "densenet121": 64 * 49}


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_width_one_is_exactly_torchvision(name):
    with torch.device("meta"):
        ours = build_backbone(name, n_classes=7)
        reference = getattr(torchvision.models, name)(weights=None, num_classes=7)
    assert count_parameters(ours) == count_parameters(reference) == GOLDEN_7[name]
    assert _shapes(ours.net) == _shapes(reference)
    assert [type(m) for m in ours.net.modules()] == [type(m) for m in reference.modules()]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_one_input_channel_changes_only_the_stem(name):
    with torch.device("meta"):
        gray = build_backbone(name, n_classes=7, in_chans=1)
    assert count_parameters(gray) == GOLDEN_7[name] - 2 * STEM[name]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_narrow_networks_keep_the_shape_of_the_network(name):
    with torch.device("meta"):
        full = build_backbone(name, n_classes=7)
        narrow = build_backbone(name, n_classes=7, width=0.25)
    assert _shapes(narrow.net).keys() == _shapes(full.net).keys()
    assert count_parameters(narrow) < count_parameters(full) / 10
    assert narrow.head.out_features == 7


def test_vgg16_batch_norm_is_torchvision_vgg16_bn():
    with torch.device("meta"):
        ours = vgg16(n_classes=7, batch_norm=True)
        reference = torchvision.models.vgg16_bn(weights=None, num_classes=7)
        gray = vgg16(n_classes=7, batch_norm=True, in_chans=1)
    assert _shapes(ours.net) == _shapes(reference)
    # 13 BatchNorms add 2 * (64*2 + 128*2 + 256*3 + 512*6) = 8,448 parameters.
    assert count_parameters(ours) == GOLDEN_7["vgg16"] + 8_448
    assert count_parameters(gray) == GOLDEN_7["vgg16"] + 8_448 - 2 * STEM["vgg16"]
    assert _shapes(gray.net).keys() == _shapes(reference).keys()
    assert ours.cam_layer() is ours.net.features[43]


def test_narrow_widths_by_hand():
    r = resnet18(width=0.125)
    assert (r.net.conv1.out_channels, r.net.layer2[0].conv1.out_channels,
            r.net.layer4[1].conv2.out_channels, r.net.fc.in_features) == (8, 16, 64, 64)
    v = vgg16(width=0.25)
    assert v.net.features[28].out_channels == 128
    assert [m.out_features for m in v.net.classifier if isinstance(m, torch.nn.Linear)] == \
        [1024, 1024, 7]
    assert v.net.classifier[0].in_features == 128 * 7 * 7
    d = densenet121(width=0.25)
    # growth 8, 16 initial features: 16 + 6*8 = 64 -> 32 + 12*8 = 128 -> 64 + 24*8 = 256
    # -> 128 + 16*8 = 256 features into the head.
    assert d.net.features.conv0.out_channels == 16 and d.head.in_features == 256


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("in_chans", [1, 3])
def test_forward_shape_and_every_parameter_gets_a_gradient(name, in_chans):
    with seeded(0, 0):
        model = build_backbone(name, n_classes=5, in_chans=in_chans, width=0.125)
    out = model(torch.rand(2, in_chans, 32, 32))
    assert out.shape == (2, 1, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_resnet_keeps_torchvision_names_and_grad_cam_layers():
    model = resnet18(width=0.125)
    for attr in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                 "avgpool", "fc"):
        assert hasattr(model.net, attr)
    assert model.cam_layer() is model.net.layer4 and model.head is model.net.fc
    assert model.cam_layer(0, image_size=48) is model.net.layer4
    vgg = vgg16(width=0.125)
    assert vgg.cam_layer() is vgg.net.features[-1] and vgg.head is vgg.net.classifier[-1]
    assert isinstance(densenet121(width=0.125).cam_layer(), torch.nn.BatchNorm2d)
    maps = gradcam(model, torch.rand(2, 3, 64, 64), model.cam_layer())
    assert maps.shape == (2, 64, 64) and maps.min() >= 0 and maps.max() <= 1


def test_initialisation_is_reproducible_per_member():
    a = Members.build(lambda: resnet18(width=0.125), 2, seed=3)
    b = Members.build(lambda: resnet18(width=0.125), 2, seed=3)
    wa = [net.net.conv1.weight for net in a.networks]
    assert torch.equal(wa[0], b.networks[0].net.conv1.weight)
    assert not torch.equal(wa[0], wa[1])


def test_weights_load_by_path_and_the_head_is_kept_when_classes_differ(tmp_path):
    with seeded(0, 0):
        source = resnet18(width=0.125, n_classes=10)
    path = tmp_path / "msceleb.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.net.state_dict().items()}},
               path)
    with seeded(0, 1):
        fresh_head = resnet18(width=0.125, n_classes=7).head.weight.clone()
    with seeded(0, 1):
        model = resnet18(width=0.125, n_classes=7, weights=path)
    assert torch.equal(model.net.layer3[0].conv1.weight, source.net.layer3[0].conv1.weight)
    assert torch.equal(model.head.weight, fresh_head)
    assert load_weights(model, path) == ["fc.weight", "fc.bias"]
    torch.save(model.state_dict(), path)  # a saved Backbone: keys start with "net."
    same = resnet18(width=0.125, n_classes=7)
    assert load_weights(same, path) == []
    assert torch.equal(same.head.weight, model.head.weight)


def test_densenet_files_in_the_old_key_format_load(tmp_path):
    source = densenet121(width=0.125)
    old = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v
           for k, v in source.net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    torch.save(old, tmp_path / "d.pth")
    model = densenet121(width=0.125, weights=tmp_path / "d.pth")
    assert torch.equal(model.net.features.denseblock1.denselayer1.conv2.weight,
                       source.net.features.denseblock1.denselayer1.conv2.weight)


def test_weights_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        resnet18(weights=tmp_path / "absent.pth")
    torch.save(resnet18(width=0.25).net.state_dict(), tmp_path / "quarter.pth")
    with pytest.raises(ValueError, match="of another shape: bn1.bias"):
        resnet18(width=0.125, weights=tmp_path / "quarter.pth")
    torch.save(vgg16(width=0.125).net.state_dict(), tmp_path / "vgg.pth")
    with pytest.raises(ValueError, match="missing: bn1.bias.*unexpected: classifier.0.bias"):
        resnet18(width=0.125, weights=tmp_path / "vgg.pth")
    torch.save({"epoch": 3}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="holds no state dict"):
        resnet18(width=0.125, weights=tmp_path / "other.pth")


def test_vgg_face_layers_map_onto_torchvision_vgg16():
    with torch.device("meta"):
        reference = _shapes(torchvision.models.vgg16(weights=None, num_classes=2622))
        layers = {f"{name}.{part}": torch.empty(reference[f"{key}.{part}"])
                  for name, key in VGG_FACE_LAYERS.items() for part in ("weight", "bias")}
        layers["fc6.weight"] = torch.empty(4096, 512, 7, 7)  # stored as a convolution
        layers["fc7.weight"] = torch.empty(4096, 4096, 1, 1)
        converted = vgg_face_state_dict(layers)
    assert {k: tuple(v.shape) for k, v in converted.items()} == reference
    del layers["conv3_2.bias"]
    with pytest.raises(KeyError, match="conv3_2.bias"):
        vgg_face_state_dict(layers)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n_classes must be at least 2, got 1"):
        resnet18(n_classes=1)
    with pytest.raises(ValueError, match="in_chans must be 1 or 3, got 2"):
        densenet121(in_chans=2)
    with pytest.raises(ValueError, match="width must be positive"):
        vgg16(width=0)
    with pytest.raises(ValueError, match="dropout must be in"):
        vgg16(width=0.125, dropout=1.0)
    with pytest.raises(ValueError, match="unknown backbone 'resnet50'"):
        build_backbone("resnet50")


def test_vgg_face_input_scales_to_255_and_subtracts_the_mean_pixel():
    x = torch.zeros(1, 3, 2, 2)
    x[0, :, 0, 0] = torch.tensor([1.0, 0.5, 0.0])
    out = VGGFaceInput()(x)
    # 255 - 129.186 = 125.814; 127.5 - 104.762 = 22.738; 0 - 93.594.
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([125.814, 22.738, -93.594]), atol=1e-4)
    assert torch.allclose(out[0, :, 1, 1], torch.tensor([-129.186, -104.762, -93.594]),
                          atol=1e-4)
    with pytest.raises(ValueError, match="RGB batches"):
        VGGFaceInput()(torch.zeros(1, 1, 2, 2))
