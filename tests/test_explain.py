import numpy as np
import pytest
import torch
from torch import nn

from fernb.explain import (EnsembleOutput, MemberOutput, branch_maps, chance_level,
                           evidence_score, gradcam, overlay, pointing_game, union_map)

SIZE = 16


def half(side: str) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[:, : SIZE // 2] = side == "left"
    mask[:, SIZE // 2:] = side == "right"
    return mask


class TinyEnsemble(nn.Module):
    """Shared conv base and M conv branches, each ending in a linear head: (B, M, C)."""

    def __init__(self, members: int = 3, classes: int = 4, width: int = 4) -> None:
        super().__init__()
        self.base = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width),
                                  nn.ReLU(), nn.MaxPool2d(2))
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))
            for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.base(x)
        return torch.stack([branch(features) for branch in self.branches], dim=1)


class WindowedEnsemble(nn.Module):
    """Member m only sees its window of the shared features: its evidence is known.

    Positive weights and no biases make every activation non-negative and zero outside the
    window, and make class 0's score rise with every activation (class 1's fall).
    """

    def __init__(self, windows: list[np.ndarray], width: int = 4) -> None:
        super().__init__()
        self.register_buffer("windows", torch.tensor(np.stack(windows), dtype=torch.float32))
        self.base = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.ReLU())
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1, bias=False)
                                   for _ in windows)
        self.heads = nn.ModuleList(nn.Linear(width, 2, bias=False) for _ in windows)
        with torch.no_grad():
            self.base[0].weight.fill_(1 / 9)
            for conv, head in zip(self.convs, self.heads):
                conv.weight.fill_(1 / 36)
                head.weight[0].fill_(1.0)
                head.weight[1].fill_(-1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.base(x)  # (B, W, H, W)
        logits = [head(torch.relu(conv(features * window)).mean(dim=(2, 3)))
                  for window, conv, head in zip(self.windows, self.convs, self.heads)]
        return torch.stack(logits, dim=1)  # (B, M, 2)


@pytest.fixture(autouse=True)
def seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) + 0.1


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
               for m in model.modules())


def test_wrappers_select_and_reduce(images):
    model = TinyEnsemble(members=3, classes=4).eval()
    logits = model(images)
    assert MemberOutput(model, 1)(images).shape == (3, 4)
    torch.testing.assert_close(MemberOutput(model, 1)(images), logits[:, 1])
    torch.testing.assert_close(EnsembleOutput(model)(images), logits.sum(dim=1))
    probs = EnsembleOutput(model, reduce="mean_softmax")(images)
    torch.testing.assert_close(probs, logits.softmax(-1).mean(1))
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


def test_wrappers_reject_bad_input(images):
    model = TinyEnsemble(members=2)
    with pytest.raises(ValueError, match="reduce"):
        EnsembleOutput(model, reduce="vote")
    with pytest.raises(ValueError, match="member 2 out of range"):
        MemberOutput(model, 2)(images)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 4))
    with pytest.raises(ValueError, match="members, classes"):
        EnsembleOutput(flat)(images)


@pytest.mark.parametrize("member", [None, 0, 2])
def test_gradcam_maps_are_normalised_at_input_size(images, member):
    model = TinyEnsemble(members=3)
    maps = gradcam(model, images, model.branches[member or 0][0], member=member)
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    peaks = maps.reshape(3, -1).max(axis=1)
    assert maps.min() >= 0.0 and peaks.max() <= 1.0
    # Each map is scaled by its own maximum; an all-zero map (no positive evidence) stays 0.
    assert np.all(np.isclose(peaks, 1.0, atol=1e-4) | (peaks == 0.0)) and peaks.max() > 0.99


def test_gradcam_leaves_model_as_it_was(images):
    model = TinyEnsemble(members=2).train()
    model.base[1].eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    gradcam(model, images, [model.base[0]], targets=[0, 1, 2])
    assert no_hooks(model)
    assert model.training and not model.base[1].training and model.branches[0].training
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_hooks_released_when_the_forward_fails(images):
    class FailsOnBatches(TinyEnsemble):
        def forward(self, x):
            if len(x) > 1:
                raise RuntimeError("out of memory")
            return super().forward(x)

    model = FailsOnBatches(members=2)
    with pytest.raises(RuntimeError, match="out of memory"):
        gradcam(model, images, model.branches[0][0], member=0)
    assert no_hooks(model)


def test_gradcam_validates_before_computing(images):
    model = TinyEnsemble(members=2, classes=4)
    with pytest.raises(ValueError, match="not a sub-module"):
        gradcam(model, images, nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="one per image"):
        gradcam(model, images, model.base[0], targets=[0, 1])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        gradcam(model, images, model.base[0], targets=4)
    with pytest.raises(TypeError, match="float tensor"):
        gradcam(model, images[0], model.base[0])
    assert no_hooks(model)


def test_left_half_model_scores_high_on_left_low_on_right(images):
    model = WindowedEnsemble([half("left")])
    maps = gradcam(model, images, model.convs[0], member=0)
    left, right = evidence_score(maps, half("left")[None].repeat(3, 0)), \
        evidence_score(maps, half("right")[None].repeat(3, 0))
    assert left.shape == (3,)
    assert (left > 0.9).all() and (right < 0.1).all()
    np.testing.assert_allclose(left + right, 1.0, atol=1e-6)
    assert (pointing_game(maps, half("left")[None].repeat(3, 0)) == 1.0).all()
    assert (left > 1.8 * chance_level(half("left"))).all()


def test_targets_choose_the_explained_class(images):
    model = WindowedEnsemble([half("left")])
    # Class 1's weights are all negative: Grad-CAM's ReLU leaves nothing (Wadhawan eq. 6).
    assert np.all(gradcam(model, images, model.convs[0], targets=1) == 0.0)
    assert np.isnan(evidence_score(gradcam(model, images, model.convs[0], targets=1),
                                   half("left")[None].repeat(3, 0))).all()
    assert gradcam(model, images, model.convs[0], targets=0).max() == pytest.approx(1.0)


def test_frozen_model_still_gets_maps(images):
    model = WindowedEnsemble([half("left")])
    model.requires_grad_(False)
    maps = gradcam(model, images, model.convs[0])
    assert maps.max() == pytest.approx(1.0)


def test_branch_maps_follow_each_members_evidence(images):
    model = WindowedEnsemble([half("left"), half("right")])
    maps = branch_maps(model, images, lambda m: model.convs[m])
    assert maps.shape == (2, 3, SIZE, SIZE)
    assert (evidence_score(maps[0], half("left")[None].repeat(3, 0)) > 0.9).all()
    assert (evidence_score(maps[1], half("right")[None].repeat(3, 0)) > 0.9).all()
    union = union_map(maps)
    assert union.shape == (3, SIZE, SIZE) and union.max() == pytest.approx(1.0, abs=1e-4)
    share = evidence_score(union, half("left")[None].repeat(3, 0))
    assert ((share > 0.3) & (share < 0.7)).all()


class CamWindowedEnsemble(WindowedEnsemble):
    """A WindowedEnsemble that names its Grad-CAM layers, as fernb's models do."""

    def cam_layer(self, member: int = 0, image_size: int | None = None) -> nn.Module:
        return self.convs[member]


def test_default_layers_are_the_models_cam_layers(images):
    model = CamWindowedEnsemble([half("left"), half("right")])
    np.testing.assert_array_equal(gradcam(model, images, member=1),
                                  gradcam(model, images, model.convs[1], member=1))
    np.testing.assert_array_equal(gradcam(model, images),
                                  gradcam(model, images, list(model.convs)))
    np.testing.assert_array_equal(branch_maps(model, images),
                                  branch_maps(model, images, lambda m: model.convs[m]))
    with pytest.raises(TypeError, match="TinyEnsemble has no cam_layer; pass target_layers"):
        gradcam(TinyEnsemble(), images, member=0)


def test_union_map_is_renormalised_maximum():
    maps = np.array([[[[0.0, 0.2], [0.1, 0.0]]], [[[0.0, 0.1], [0.4, 0.0]]]])
    np.testing.assert_allclose(union_map(maps)[0], [[0.0, 0.5], [1.0, 0.0]], atol=1e-6)
    with pytest.raises(ValueError, match="members, batch"):
        union_map(maps[0])


def test_evidence_score_worked_example_and_edge_cases():
    cam = np.array([[1.0, 3.0], [0.0, 0.0]])
    mask = np.array([[0, 1], [0, 0]])
    assert evidence_score(cam, mask) == pytest.approx(0.75)
    assert evidence_score(cam, 1 - mask) == pytest.approx(0.25)
    assert np.isnan(evidence_score(cam, np.zeros((2, 2))))
    assert np.isnan(evidence_score(np.zeros((2, 2)), mask))
    uniform = np.ones((4, 4))
    ring = np.zeros((4, 4), dtype=bool)
    ring[0] = True
    assert evidence_score(uniform, ring) == pytest.approx(chance_level(ring)) == 0.25
    batch = evidence_score(np.stack([cam, np.zeros((2, 2))]), np.stack([mask, mask]))
    assert batch[0] == pytest.approx(0.75) and np.isnan(batch[1])


@pytest.mark.parametrize("cam, mask, match", [
    (np.ones((2, 2)), np.ones((3, 3)), "same shape"),
    (np.ones((2, 2)), np.full((2, 2), 0.5), "binary"),
    (-np.ones((2, 2)), np.ones((2, 2)), "non-negative"),
    (np.full((2, 2), np.nan), np.ones((2, 2)), "finite"),
])
def test_scores_reject_bad_input(cam, mask, match):
    with pytest.raises(ValueError, match=match):
        evidence_score(cam, mask)


def test_pointing_game():
    mask = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]])
    cam = np.zeros((3, 3))
    cam[0, 1] = 1.0
    assert pointing_game(cam, mask) == 1.0
    cam[2, 2] = 1.0  # a second, equal peak outside the region
    assert pointing_game(cam, mask) == 0.0
    assert np.isnan(pointing_game(np.full((3, 3), 0.5), mask))
    assert np.isnan(pointing_game(cam, np.zeros((3, 3))))
    assert chance_level(np.stack([mask, mask])).tolist() == [2 / 9, 2 / 9]


def test_overlay_blends_map_onto_gray_face():
    face = np.tile(np.linspace(0, 255, SIZE, dtype=np.uint8), (SIZE, 1))
    cam = np.zeros((SIZE, SIZE), dtype=np.float32)
    cam[4:8, 4:8] = 1.0
    rgb = overlay(face, cam)
    assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(overlay(face / 255.0, cam), rgb)
    np.testing.assert_array_equal(overlay(torch.tensor(face / 255.0)[None], cam), rgb)
    only_face = overlay(face, cam, alpha=0.0)
    np.testing.assert_allclose(only_face, np.repeat(face[..., None], 3, -1), atol=1)
    hot = overlay(face, cam, alpha=1.0)
    assert hot[5, 5, 0] > hot[5, 5, 2] and hot[0, 0, 2] > hot[0, 0, 0]


def test_overlay_rejects_bad_input():
    face = np.zeros((SIZE, SIZE), dtype=np.uint8)
    with pytest.raises(ValueError, match="same size"):
        overlay(face, np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        overlay(face, np.full((SIZE, SIZE), 2.0))
    with pytest.raises(ValueError, match="alpha"):
        overlay(face, np.zeros((SIZE, SIZE)), alpha=1.5)
    with pytest.raises(ValueError, match="uint8"):
        overlay(np.full((SIZE, SIZE), 7.0), np.zeros((SIZE, SIZE)))
