"""Three-stage FLL-to-FER transfer (Wadhawan & Gandhi 2023, Sec. III-D and V-B): eq. 1,
inputs and targets, what each stage trains, resumption, landmark errors, augmentation."""
import copy
import functools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

import fernb.transfer as transfer
from fernb.data.datasets import FaceDataset
from fernb.data.transforms import apply_clahe
from fernb.landmarks import PARTS, subset_flip_permutation
from fernb.losses import member_l1
from fernb.models.parts import PartNetwork, part_ensemble
from fernb.train import History
from fernb.transfer import (Runtime, TransferConfig, TransferResult, equalized, error_table,
                            expression_dataset, inputs, landmark_dataset, landmark_errors,
                            landmark_targets, paper_augmentation, relative_change,
                            train_direct, train_expressions, train_members, train_transfer)

SIZE = 16
TINY = TransferConfig(landmark_epochs=2, head_epochs=1, finetune_epochs=2, direct_epochs=2,
                      batch_size=8, patience=None, head_patience=None)

CPU = Runtime(device="cpu")


def faces(n: int = 12, seed: int = 0, landmarks: bool = True) -> FaceDataset:
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, SIZE - 1, (n, 68, 2)).astype(np.float32) if landmarks else None
    return FaceDataset(images=rng.integers(0, 256, (n, SIZE, SIZE), dtype=np.uint8),
                       labels=np.arange(n) % 7, subjects=np.arange(n),
                       classes=tuple("ADFHNSU"), landmarks=points, name="tiny")


def tiny(part="mouth", seed=0, standardize=False):
    torch.manual_seed(seed)
    return PartNetwork(part=part, n_classes=7, width=0.125, standardize=standardize)


def state(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if k.startswith(prefix)}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------ eq. 1, config

def test_member_l1_is_eq1_summed_over_members():
    outputs = torch.tensor([[[0.1, 0.5], [0.3, 0.3]],
                            [[0.2, 0.9], [0.0, 1.0]]])  # (B=2, M=2, D=2)
    targets = torch.tensor([[0.0, 0.5], [0.2, 1.0]])
    # member 1: (0.1 + 0 + 0 + 0.1) / 4 = 0.05; member 2: (0.3 + 0.2 + 0.2 + 0) / 4 = 0.175
    assert member_l1(outputs, targets).item() == pytest.approx(0.225)


def test_config_defaults_are_the_papers():
    c = TransferConfig()
    assert (c.landmark_lr, c.head_lr, c.finetune_lr, c.direct_lr) == (1e-2, 1e-2, 1e-4, 1e-2)
    assert (c.landmark_epochs, c.head_epochs + c.finetune_epochs, c.direct_epochs) == \
        (100, 300, 400)  # CK+
    assert (c.batch_size, c.betas, c.eps) == (32, (0.9, 0.999), 1e-7)


@pytest.mark.parametrize("name, expected", [("ckplus", (400, 100, 290)),
                                            ("jaffe", (300, 100, 190)),
                                            ("sfew", (400, 200, 190))])
def test_paper_epochs_per_dataset(name, expected):
    c = TransferConfig.for_dataset(name)
    assert (c.direct_epochs, c.landmark_epochs, c.finetune_epochs) == expected
    assert TransferConfig.for_dataset(name, head_epochs=5).finetune_epochs == expected[2] + 5


@pytest.mark.parametrize("stop_on, select, maximize", [("loss", "val_loss", False),
                                                       ("accuracy", "val_acc_ens", True)])
def test_expression_stages_stop_on_the_chosen_score(monkeypatch, stop_on, select, maximize):
    seen = []
    real_fit = transfer.fit
    monkeypatch.setattr(transfer, "fit", lambda *a, **k: seen.append(
        (a[3].task, a[3].select, a[3].maximize)) or real_fit(*a, **k))
    config = replace(TINY, stop_on=stop_on)
    train_transfer(tiny(), faces(), faces(4, seed=1), config=config, runtime=CPU)
    history = train_direct(tiny(None), faces(), faces(4, seed=1), config=config, runtime=CPU)
    # stage 1 regresses landmarks and watches its loss; stages 2, 3 and direct training the
    # chosen score, and keep its best epoch
    assert seen == [("regression", "val_loss", False)] + [("classification", select,
                                                            maximize)] * 3
    scores = [row[select] for row in history.epochs]
    best = (max if maximize else min)(scores)
    assert scores[history.best_epoch - 1] == best and scores.index(best) == history.best_epoch - 1


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="the paper gives epochs"):
        TransferConfig.for_dataset("fer2013")
    with pytest.raises(ValueError, match="finetune_epochs"):
        TransferConfig.for_dataset("jaffe", head_epochs=200)
    with pytest.raises(ValueError, match="finetune_lr"):
        TransferConfig(finetune_lr=0)
    with pytest.raises(ValueError, match="patience"):
        TransferConfig(patience=0)
    with pytest.raises(ValueError, match="head_patience"):
        TransferConfig(head_patience=0)
    with pytest.raises(ValueError, match="finetune_statistics"):
        TransferConfig(finetune_statistics="frozen")
    with pytest.raises(ValueError, match="head_copies"):
        TransferConfig(head_copies=-1)
    with pytest.raises(ValueError, match="stop_on must be one of"):
        TransferConfig(stop_on="f1")


# ---------------------------------------------------------------------- inputs, targets

def test_inputs_scale_to_minus_one_one_on_three_channels():
    ds = faces(2)
    ds.images[0, 0, :3] = (0, 51, 255)
    x = inputs(ds)
    assert x.shape == (2, 3, SIZE, SIZE)
    torch.testing.assert_close(x[0, :, 0, :3], torch.tensor([[-1.0, -0.6, 1.0]] * 3))


def test_landmark_targets_by_hand_and_rows_without_landmarks_dropped():
    ds = faces(3)
    ds.landmarks[0, 48] = (4, 8)    # first mouth point
    ds.landmarks[2, 67] = (12, 2)   # last mouth point
    ds.landmarks[1, 50] = np.nan    # no detection for image 1
    targets = landmark_targets(ds, "mouth")
    assert targets.shape == (3, 40)
    torch.testing.assert_close(targets[0, :2], torch.tensor([4 / 16, 8 / 16]))
    torch.testing.assert_close(targets[2, -2:], torch.tensor([12 / 16, 2 / 16]))
    data = landmark_dataset(ds, "mouth")
    assert len(data) == 2 and torch.equal(data.tensors[1], targets[[0, 2]])
    assert torch.equal(data.tensors[0], inputs(ds)[[0, 2]])
    # The jaw's points are all there: nothing is dropped and the image tensor is shared.
    x = inputs(ds)
    assert landmark_dataset(ds, "jaw", x=x).tensors[0] is x
    labels = expression_dataset(ds).tensors[1]
    assert labels.tolist() == [0, 1, 2]


def test_missing_landmarks_are_named():
    with pytest.raises(ValueError, match="has no landmarks"):
        landmark_targets(faces(2, landmarks=False), "eyes")
    ds = faces(2)
    ds.landmarks[:] = np.nan
    with pytest.raises(ValueError, match="no image"):
        landmark_dataset(ds, "eyes")


def test_equalized_applies_clahe_to_every_image():
    ds = faces(3)
    out = equalized(ds)
    assert all(np.array_equal(out.images[i], apply_clahe(ds.images[i])) for i in range(3))
    assert not np.array_equal(out.images, ds.images) and out.labels is ds.labels


# --------------------------------------------------------------------- landmark errors

def constant_landmarks(part: str, value: float = 0.5) -> PartNetwork:
    network = tiny(part)
    torch.nn.init.zeros_(network.landmark_head[-1].weight)
    torch.nn.init.constant_(network.landmark_head[-1].bias, value)
    return network


def test_landmark_error_by_hand():
    ds = faces(3)
    for part, (x, y) in {"jaw": (0, 0), "eyebrows": (8, 8), "nose": (4, 8), "eyes": (12, 4),
                         "mouth": (8, 12)}.items():
        ds.landmarks[:, list(PARTS[part])] = (x, y)
    ds.landmarks[2, 30] = np.nan  # left out
    # Predictions are 0.5 everywhere; nose targets are (4/16, 8/16) = (0.25, 0.5).
    assert landmark_errors(constant_landmarks("nose"), ds) == {"nose": pytest.approx(0.125)}
    errors = landmark_errors(constant_landmarks("full"), ds)
    assert errors == pytest.approx({"jaw": 0.5, "eyebrows": 0.0, "nose": 0.125, "eyes": 0.25,
                                    "mouth": 0.125,
                                    "full": (17 * 0.5 + 9 * 0.125 + 12 * 0.25 + 20 * 0.125) / 68})
    with pytest.raises(ValueError, match="Baseline"):
        landmark_errors(tiny(None), ds)


# ----------------------------------------------------------------------- three stages

VIEWS = (transfer._Landmarks, transfer._Head, transfer._FixedStatistics)


def test_each_stage_trains_what_the_paper_says(monkeypatch):
    calls = []
    real_fit = transfer.fit

    def spy(model, *args, **kwargs):
        net = model.network if isinstance(model, VIEWS) else model
        before = {k: state(net, k) for k in ("features", "landmark_head", "head")}
        history = real_fit(model, *args, **kwargs)
        after = {k: state(net, k) for k in ("features", "landmark_head", "head")}
        config = args[2]
        trainable = [p for p in model.parameters() if p.requires_grad]
        calls.append({"changed": {k for k in before if not same(before[k], after[k])},
                      "lr": config.lr, "optimizer": config.optimizer.name,
                      "eps": config.optimizer.options["eps"],
                      "betas": config.optimizer.options["betas"],
                      "n_params": len(trainable), "loss": config.loss,
                      "early": config.early_stopping, "batch": config.batch_size,
                      "n_train": len(args[0])})
        return history

    monkeypatch.setattr(transfer, "fit", spy)
    network = tiny("eyes")
    result = train_transfer(network, faces(), faces(6, seed=1), config=TINY, runtime=CPU)
    # BatchNorm buffers change in stage 1 only: stage 3 keeps stage 1's statistics.
    assert [c["changed"] for c in calls] == [{"features", "landmark_head"}, {"head"},
                                             {"features", "head"}]
    assert [c["lr"] for c in calls] == [1e-2, 1e-2, 1e-4]
    assert all(c["optimizer"] == "Adam" and c["eps"] == 1e-7 and c["betas"] == (0.9, 0.999)
               and c["batch"] == 8 and c["early"] is None for c in calls)
    assert calls[0]["loss"] is member_l1 and calls[1]["loss"] is None
    # conv weight + bias and BN weight + bias per unit: 8 units x 4 tensors = 32 in the
    # extractor; 4 in the landmark head; 6 in the expression head.
    assert [c["n_params"] for c in calls] == [32 + 4, 6, 32 + 6]
    assert isinstance(result, TransferResult)
    assert [len(h) for h in (result.landmarks, result.head, result.finetune)] == [2, 1, 2]
    assert set(result.error_before) == set(result.error_after) == {"eyes"}
    assert all(p.requires_grad for p in network.parameters())


def test_stage_one_learns_on_a_separate_landmark_set(monkeypatch):
    """Many faces with landmarks, few with labels: stage 1 reads only the landmark set (its
    labels unused), stages 2 and 3 only the expression set."""
    seen = []
    real_fit = transfer.fit
    monkeypatch.setattr(transfer, "fit", lambda *a, **k: seen.append(len(a[1]))
                        or real_fit(*a, **k))
    pool = faces(20, seed=3)
    pool.labels[:] = 0  # a pool's labels mean nothing
    labelled = faces(6, seed=4, landmarks=False)  # no landmarks needed for expressions
    result = train_transfer(tiny("mouth"), labelled, faces(4, seed=5, landmarks=False),
                            landmarks=pool, landmarks_val=faces(5, seed=6), config=TINY,
                            runtime=CPU)
    assert seen == [20, 6, 6]
    # The Sec. V-B errors fall back to the landmark validation faces.
    assert set(result.error_before) == {"mouth"}


def test_early_stopping_follows_the_config(monkeypatch):
    seen = []
    real_fit = transfer.fit
    monkeypatch.setattr(transfer, "fit", lambda *a, **k: seen.append(a[3].early_stopping)
                        or real_fit(*a, **k))
    config = TransferConfig(landmark_epochs=1, head_epochs=1, finetune_epochs=1, batch_size=8,
                            patience=3, head_patience=7)
    train_transfer(tiny(), faces(), faces(4, seed=1), config=config, runtime=CPU)
    train_transfer(tiny(), faces(), None, config=config, runtime=CPU)
    assert seen == [3, 7, 3, None, None, None]


def test_errors_are_those_of_the_stage_one_head_before_and_after(tmp_path):
    network, val = tiny("nose"), faces(6, seed=1)
    result = train_transfer(network, faces(), val, config=TINY, checkpoint=tmp_path,
                            runtime=CPU)
    assert result.error_after == pytest.approx(landmark_errors(network, val))
    stage1 = torch.load(tmp_path / "landmarks" / "last.pt", weights_only=True)["best_state"]
    fresh = tiny("nose", seed=5)
    transfer._Landmarks(fresh).load_state_dict(stage1)
    assert result.error_before == pytest.approx(landmark_errors(fresh, val))
    again = tiny("nose", seed=6)
    again.load_state_dict(result.landmark_state)
    assert result.error_before == pytest.approx(landmark_errors(again, val))
    # The localisation head after fine-tuning is exactly the stage-1 head.
    assert same(state(fresh, "landmark_head"), state(network, "landmark_head"))
    assert not same(state(fresh, "features"), state(network, "features"))
    # Each face's error, averaged, is the error.
    per_face = transfer.image_errors(network, val)
    assert float(per_face["nose"].mean()) == pytest.approx(result.error_after["nose"])
    full = transfer.image_errors(tiny("full"), val)
    assert set(full) == {*PARTS_OF_EL, "full"} and all(len(v) == 6 for v in full.values())


PARTS_OF_EL = ("eyebrows", "eyes", "nose", "mouth", "jaw")


def test_head_on_cached_features_is_the_head_on_the_frozen_extractor():
    # Without augmentation, stage 2 trains the head on features computed once; forcing the
    # per-step path (an augmentation that changes nothing) gives the same network, with or
    # without the standardisation of the features.
    identity = lambda part: (lambda x, y: (x, y))  # noqa: E731
    for standardize in (False, True):
        cached = tiny("mouth", standardize=standardize)
        stepped = tiny("mouth", standardize=standardize)
        a = train_transfer(cached, faces(), faces(6, seed=1), config=TINY,
                           runtime=Runtime("cpu", "fp32"))
        b = train_transfer(stepped, faces(), faces(6, seed=1), config=TINY, augment=identity,
                           runtime=Runtime("cpu", "fp32"))
        for key, value in cached.state_dict().items():
            torch.testing.assert_close(value, stepped.state_dict()[key], rtol=1e-4,
                                       atol=1e-5)
        np.testing.assert_allclose(a.head.to_frame()["val_loss"],
                                   b.head.to_frame()["val_loss"], rtol=1e-4)
    # head_augment=False: stages 1 and 3 are augmented, stage 2 runs on features.
    built = []
    factory = lambda part: built.append(part) or identity(part)  # noqa: E731
    train_transfer(tiny("mouth"), faces(), None, config=replace(TINY, head_augment=False),
                   augment=factory, runtime=CPU)
    assert built == ["mouth", None]


class _Pixels(torch.nn.Module):
    """A fixed extractor whose 16 features are the first pixel row, squeezed as a landmark
    extractor's pooled features are: a mean of 0.64 and a spread of a few hundredths."""

    in_chans, out_features = 3, 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.64 + 0.026 * x[:, 0, 0, :16]


def squeezed_faces(n: int, seed: int) -> FaceDataset:
    """Faces whose class shows in the first pixel row (a bright pixel at the class's
    column), on noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 7
    images = rng.integers(100, 156, (n, SIZE, SIZE), dtype=np.uint8)
    images[np.arange(n), 0, 2 * labels] = 255
    return FaceDataset(images=images, labels=labels, subjects=np.arange(n),
                       classes=tuple("ADFHNSU"), name="squeezed")


@pytest.mark.parametrize("standardize", [False, True])
def test_stage_two_on_squeezed_features_learns_once_they_are_standardised(standardize):
    """Informative features with a spread of 0.026 around 0.64: an Adam head at 1e-2 for a
    short budget stays near chance on them; standardised (the book's stage 2) it learns
    them, and the standardisation is set from the training faces' features."""
    network = PartNetwork(part="mouth", n_classes=7, width=0.125, standardize=standardize)
    network.features = _Pixels()
    train, test = squeezed_faces(140, 0), squeezed_faces(70, 1)
    config = replace(TINY, head_epochs=4, head_patience=None, batch_size=32)
    transfer.train_head(network, train, None, config=config, runtime=Runtime("cpu", "fp32"))
    accuracy = float((network(inputs(test)).argmax(-1)[:, 0].numpy() == test.labels).mean())
    if standardize:
        features = network.forward_features(inputs(train))
        torch.testing.assert_close(network.standardize.mean, features.mean(0))
        torch.testing.assert_close(network.standardize.scale, features.std(0, unbiased=False))
        assert accuracy > 0.9
    else:
        assert accuracy < 0.5


def test_stage_two_caches_the_features_of_augmented_copies(monkeypatch):
    network = tiny("nose", standardize=True)
    train = faces(10)
    x, y = inputs(train), torch.from_numpy(train.labels)
    flip = paper_augmentation(SIZE, part=None, flip=1.0, degrees=0.0, shift=0.0)
    features, labels = transfer.cached_features(network, x, y, flip, copies=2, seed=3)
    assert features.shape == (30, network.features.out_features)
    assert labels.tolist() == 3 * train.labels.tolist()
    mirrored = transfer.extract_features(network, x.flip(-1))
    torch.testing.assert_close(features[:10], transfer.extract_features(network, x))
    torch.testing.assert_close(features[10:20], mirrored)  # a flip every time
    again, _ = transfer.cached_features(network, x, y, paper_augmentation(SIZE, part=None),
                                        copies=1, seed=3)
    same_seed, _ = transfer.cached_features(network, x, y, paper_augmentation(SIZE, part=None),
                                            copies=1, seed=3)
    torch.testing.assert_close(again, same_seed)  # drawn under the seed
    # The head trains on them, and the standardisation is set from all of them.
    seen = []
    real_fit = transfer.fit
    monkeypatch.setattr(transfer, "fit", lambda *a, **k: seen.append(len(a[1]))
                        or real_fit(*a, **k))
    transfer.train_head(network, train, None, runtime=CPU, augment=lambda part: flip,
                        config=replace(TINY, head_augment=False, head_copies=2))
    assert seen == [30]
    torch.testing.assert_close(network.standardize.mean, features.mean(0))


def test_cached_features_without_copies_are_the_faces_features_in_eval_mode():
    # No augmentation (or no copies): the (N, F) features of the faces themselves, with the
    # BatchNorm running statistics (eval mode), whatever the batch size; the network's mode
    # is restored and its statistics are left alone.
    network = tiny("eyes")
    network.train()
    x = torch.randn(10, 3, SIZE, SIZE)
    y = torch.arange(10) % 7
    before = state(network, "")
    with torch.no_grad():
        network.eval()
        expected = network.forward_features(x)
        network.train()
    for augment, copies in ((None, 3), (lambda x, y: (x.flip(-1), y), 0)):
        features, labels = transfer.cached_features(network, x, y, augment, copies=copies,
                                                    batch_size=3)
        torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(labels, y)
    assert network.training and same(state(network, ""), before)


def test_cached_copies_follow_their_seed_and_leave_the_global_generator_alone():
    network = tiny("nose")
    x = torch.randn(9, 3, SIZE, SIZE)
    y = torch.arange(9) % 7
    noisy = lambda x, y: (x + torch.randn_like(x), y)  # noqa: E731
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, _ = transfer.cached_features(network, x, y, noisy, copies=2, seed=1, batch_size=4)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's draws are unchanged
    b, _ = transfer.cached_features(network, x, y, noisy, copies=2, seed=1, batch_size=4)
    c, _ = transfer.cached_features(network, x, y, noisy, copies=2, seed=2, batch_size=4)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[9:], c[9:])  # another seed, other copies
    torch.testing.assert_close(a[:9], c[:9])  # the faces' own features do not depend on it
    assert not torch.allclose(a[9:18], a[18:])  # each copy is drawn anew


def test_fine_tuning_keeps_or_updates_the_batchnorm_statistics():
    def running(net):
        return {k: v.clone() for k, v in net.state_dict().items() if "running_" in k}

    fixed, updated = tiny("jaw"), tiny("jaw")
    start = running(fixed)
    transfer.finetune(fixed, faces(), faces(4, seed=1), config=TINY, runtime=CPU)
    transfer.finetune(updated, faces(), faces(4, seed=1), runtime=CPU,
                      config=replace(TINY, finetune_statistics="update"))
    assert same(running(fixed), start)
    assert not same(running(updated), start)
    assert not same(state(fixed, "features.blocks.0.0.0"),
                    state(tiny("jaw"), "features.blocks.0.0.0"))  # the weights did train


def test_the_standardisation_stays_fixed_after_stage_two():
    network = tiny("eyes", standardize=True)
    train_expressions(network, faces(), faces(4, seed=1), config=TINY, runtime=CPU)
    mean, scale = network.standardize.mean.clone(), network.standardize.scale.clone()
    assert not torch.equal(scale, torch.ones_like(scale))
    transfer.finetune(network, faces(), faces(4, seed=1), config=TINY, runtime=CPU)
    assert torch.equal(mean, network.standardize.mean)
    assert torch.equal(scale, network.standardize.scale)


def test_the_control_runs_stages_two_and_three_from_random_weights(monkeypatch):
    calls = []
    real_fit = transfer.fit
    monkeypatch.setattr(transfer, "fit", lambda *a, **k: calls.append(a[3].lr)
                        or real_fit(*a, **k))
    network = tiny("full")
    landmarks = state(network, "landmark_head")
    head, tuned = train_expressions(network, faces(), faces(4, seed=1), config=TINY,
                                    runtime=CPU)
    assert calls == [1e-2, 1e-4] and len(head) == 1 and len(tuned) == 2
    assert same(landmarks, state(network, "landmark_head"))


def test_an_epoch_is_about_epoch_images_images():
    def sized(n):
        return TensorDataset(torch.arange(n), torch.arange(n))

    assert len(transfer.epoch_set(sized(56), 960)) == 17 * 56    # 952
    assert len(transfer.epoch_set(sized(448), 960)) == 2 * 448   # 896
    assert len(transfer.epoch_set(sized(672), 960)) == 672       # round(1.43) = 1
    assert len(transfer.epoch_set(sized(2000), 960)) == 2000     # at least one pass
    assert transfer.epoch_set(sized(5), None).tensors[0].tolist() == [0, 1, 2, 3, 4]
    repeated = transfer.epoch_set(sized(3), 7)
    assert repeated.tensors[1].tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError, match="epoch_images"):
        TransferConfig(epoch_images=0)


def test_epoch_images_sets_the_steps_of_every_stage(monkeypatch):
    seen = []
    real_fit = transfer.fit
    monkeypatch.setattr(transfer, "fit", lambda *a, **k: seen.append(len(a[1]))
                        or real_fit(*a, **k))
    config = replace(TINY, epoch_images=36)
    train_transfer(tiny("nose"), faces(12), None, config=config, runtime=CPU)
    train_direct(tiny(None), faces(12), None, config=config, runtime=CPU)
    assert seen == [36, 36, 36, 36]


# ----------------------------------------------------------- how far fine-tuning moves

def test_relative_change_by_hand():
    a, b = tiny("mouth"), tiny("mouth")
    assert relative_change(a, b) == 0.0
    with torch.no_grad():
        for m in b.features.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(1.5)  # every kernel 50% longer
                m.bias.add_(10.0)   # biases and BatchNorm do not count
    assert relative_change(a, b) == pytest.approx(0.5)
    assert relative_change(a.state_dict(), b.state_dict()) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="kernels"):
        transfer.conv_kernels({"head.0.weight": torch.zeros(2, 2)})


def test_choose_rate_interpolates_in_log_rate_and_log_travel():
    travel = pd.Series({1e-4: 0.001, 1e-3: 0.01, 1e-2: 0.1})
    assert transfer.choose_rate(travel, 0.01) == pytest.approx(1e-3)
    # Half-way in logs between 0.001 and 0.01 is sqrt(10) times 0.001, at sqrt(10) * 1e-4.
    assert transfer.choose_rate(travel, 0.001 * 10 ** 0.5) == pytest.approx(1e-4 * 10 ** 0.5)
    assert transfer.choose_rate(travel, 1e-6) == pytest.approx(1e-4)   # clipped
    assert transfer.choose_rate(travel, 5.0) == pytest.approx(1e-2)
    assert transfer.choose_rate(pd.Series({3e-4: 0.2}), 0.01) == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="target"):
        transfer.choose_rate(travel, 0.0)


def test_fine_tuning_travels_farther_at_higher_rates_and_leaves_the_network_alone():
    network = tiny("full")
    before = {k: v.clone() for k, v in network.state_dict().items()}
    travel = transfer.finetune_travel(network, faces(), [1e-2, 1e-4, 1e-3],
                                      val=faces(4, seed=2), config=TINY, runtime=CPU)
    assert travel.index.tolist() == [1e-4, 1e-3, 1e-2]
    assert travel.is_monotonic_increasing and travel.iloc[0] > 0
    assert same(before, network.state_dict())
    with pytest.raises(ValueError, match="lrs"):
        transfer.finetune_travel(network, faces(), [], config=TINY, runtime=CPU)


def test_rerun_resumes_from_the_stage_checkpoints(tmp_path):
    first = tiny("jaw")
    done = train_transfer(first, faces(), faces(6, seed=1), config=TINY,
                          checkpoint=tmp_path, runtime=CPU)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finetune", "head", "landmarks"]
    other = tiny("jaw", seed=9)  # other initial weights: only the checkpoints can agree
    again = train_transfer(other, faces(), faces(6, seed=1), config=TINY,
                           checkpoint=tmp_path, runtime=CPU)
    assert same(first.state_dict(), other.state_dict())
    assert again.finetune.to_frame().equals(done.finetune.to_frame())
    assert again.error_before == done.error_before


def test_direct_training_of_the_baseline(monkeypatch):
    lrs = []
    real_fit = transfer.fit
    monkeypatch.setattr(transfer, "fit", lambda *a, **k: lrs.append(a[3].lr) or real_fit(*a, **k))
    network = tiny(None)
    history = train_direct(network, faces(), faces(6, seed=1), config=TINY, runtime=CPU)
    assert isinstance(history, History) and len(history) == 2 and lrs == [1e-2]


def test_train_members_of_each_kind(tmp_path):
    ftl = part_ensemble("ftl", n_networks=2, n_classes=7, width=0.125)
    results = train_members(ftl, faces(), faces(6, seed=1), config=TINY,
                            checkpoint=tmp_path, runtime=CPU)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["member_1_full", "member_2_full"]
    table = error_table(results)
    assert table.index.names == ["member", "part"] and len(table) == 2 * 6
    np.testing.assert_allclose(table["change"], table["after"] - table["before"])
    baseline = part_ensemble("baseline", n_networks=2, n_classes=7, width=0.125)
    histories = train_members(baseline, faces(), None, config=TINY, runtime=CPU)
    assert all(isinstance(h, History) and len(h) == 2 for h in histories)
    with pytest.raises(ValueError, match="no TransferResult"):
        error_table(histories)


def test_bad_arguments():
    with pytest.raises(TypeError, match="train_direct"):
        train_transfer(tiny(None), faces(), config=TINY)
    with pytest.raises(ValueError, match="has no landmarks"):
        train_transfer(tiny(), faces(landmarks=False), config=TINY)
    with pytest.raises(TypeError, match="PartNetworks"):
        train_members(torch.nn.Linear(2, 2), faces(), config=TINY)
    with pytest.raises(ValueError, match="part must be one of"):
        paper_augmentation(SIZE, part="ears")
    with pytest.raises(ValueError, match="shift"):
        paper_augmentation(SIZE, shift=1.5)


# ------------------------------------------------------------------------- augmentation

def test_subset_flip_permutation_by_hand():
    # Eyes 36-47: 36<->45, 37<->44, 38<->43, 39<->42, 40<->47, 41<->46, as positions 0-11.
    assert subset_flip_permutation(PARTS["eyes"]).tolist() == [9, 8, 7, 6, 11, 10,
                                                               3, 2, 1, 0, 5, 4]
    # Nose 27-35: the bridge 27-30 and the tip 33 stay, 31<->35 and 32<->34.
    assert subset_flip_permutation(PARTS["nose"]).tolist() == [0, 1, 2, 3, 8, 7, 6, 5, 4]
    with pytest.raises(ValueError, match="mirror"):
        subset_flip_permutation((36, 37))


def test_flip_swaps_the_parts_left_and_right_points():
    x = torch.rand(2, 3, SIZE, SIZE)
    ds = faces(2)
    y = landmark_targets(ds, "eyes")
    out_x, out_y = paper_augmentation(SIZE, part="eyes", flip=1.0, degrees=0, shift=0)(x, y)
    torch.testing.assert_close(out_x, x.flip(-1))
    # Point 36 (position 0) becomes the mirror of point 45; point 40 that of point 47.
    for i, j in ((0, 9), (4, 11)):
        src = ds.landmarks[:, 36 + j]
        expected = torch.tensor(np.stack([(SIZE - 1 - src[:, 0]) / SIZE, src[:, 1] / SIZE], 1))
        torch.testing.assert_close(out_y[:, 2 * i:2 * i + 2], expected)


def test_rotation_keeps_distances_to_the_centre_and_labels_pass_through():
    torch.manual_seed(0)
    y = landmark_targets(faces(4), "mouth")
    _, out = paper_augmentation(SIZE, part="mouth", flip=0.0, shift=0.0)(torch.rand(4, 3, SIZE,
                                                                                    SIZE), y)
    centre = (SIZE - 1) / 2
    radius = ((y.view(4, -1, 2) * SIZE - centre) ** 2).sum(-1)
    torch.testing.assert_close(((out.view(4, -1, 2) * SIZE - centre) ** 2).sum(-1), radius)
    assert not torch.allclose(out, y)
    labels = torch.tensor([0, 3, 5, 6])
    _, same_labels = paper_augmentation(SIZE)(torch.rand(4, 3, SIZE, SIZE), labels)
    assert torch.equal(same_labels, labels)


def test_translation_moves_every_point_of_an_image_alike():
    torch.manual_seed(1)
    y = landmark_targets(faces(6), "jaw")
    _, out = paper_augmentation(SIZE, part="jaw", flip=0.0, degrees=0,
                                shift=0.25)(torch.rand(6, 3, SIZE, SIZE), y)
    moved = (out - y).view(6, -1, 2) * SIZE  # pixels
    torch.testing.assert_close(moved, moved[:, :1].expand_as(moved))
    offsets = moved[:, 0]
    assert torch.allclose(offsets, offsets.round(), atol=1e-4) and offsets.abs().max() <= 4
    assert offsets.abs().sum() > 0


def test_training_with_the_papers_augmentation():
    network = tiny("eyebrows")
    result = train_transfer(network, faces(), faces(6, seed=1), config=TINY,
                            augment=functools.partial(paper_augmentation, SIZE),
                            runtime=CPU)
    assert np.isfinite(result.landmarks.to_frame()["train_loss"]).all()
    assert copy.deepcopy(network)(inputs(faces(2))).shape == (2, 1, 7)
