"""The training loop, ESR's Algorithm 1, affect fine-tuning and bagging."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from fernb.data.datasets import FaceDataset
from fernb.evaluate import predict
from fernb.models import ESR, single_network
from fernb.losses import member_cross_entropy, member_rmse
from fernb.device import resolve_device
from fernb.train import (FitConfig, History, Optimizer, adam, balanced_subset, finetune_affect,
                         fit, freeze, quadrants, sgd, train_bagging, train_esr)


def cfg(epochs=1, lr=0.05, **changes):
    """A small, fast training configuration on the CPU."""
    return FitConfig(**{"epochs": epochs, "optimizer": sgd(lr), "device": "cpu",
                        "batch_size": 16, **changes})


def toy(n=48, size=48, seed=0):
    """Tiny learnable data: the class is which image half is bright."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, size, size, generator=g) * 0.2
    x[y == 1, :, :, size // 2:] += 0.8
    x[y == 0, :, :, :size // 2] += 0.8
    return TensorDataset(x, y)


def small_esr(n_branches=2, level=3, n_classes=2):
    torch.manual_seed(0)
    return ESR(level=level, n_branches=n_branches, n_classes=n_classes, width=0.25)


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def same_values(a, b):
    """Equal tensors in the same order, whatever the keys are called."""
    a, b = list(a.state_dict().values()), list(b.state_dict().values())
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_member_cross_entropy_is_eq1_sum_over_members():
    logits = torch.zeros(5, 3, 8)  # uniform: each member's cross-entropy is ln 8
    assert member_cross_entropy(logits, torch.zeros(5, dtype=torch.long)).item() == \
        pytest.approx(3 * math.log(8))
    logits = torch.randn(6, 4, 8)
    y = torch.randint(0, 8, (6,))
    expected = sum(F.cross_entropy(logits[:, b], y) for b in range(4))
    torch.testing.assert_close(member_cross_entropy(logits, y), expected)
    # Soft labels: a one-hot distribution gives the same loss as the class index.
    torch.testing.assert_close(member_cross_entropy(logits, F.one_hot(y, 8).float()), expected)


def test_member_rmse():
    out = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]]])  # (B=2, M=2, 2)
    target = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    # member 1: RMSE 0 (valence) + 1 (arousal); member 2: 1 + 0.
    assert member_rmse(out, target).item() == pytest.approx(2.0)


def test_fit_learns_and_records_history():
    model, data = small_esr(), toy()
    history = fit(model, data, data, cfg(4))
    frame = history.to_frame()
    assert list(frame.index) == [1, 2, 3, 4]
    for col in ("train_loss", "train_acc_1", "train_acc_2", "train_acc_ens", "val_loss",
                "val_acc_ens", "lr", "seconds"):
        assert col in frame
    assert frame.train_loss.iloc[-1] < frame.train_loss.iloc[0]
    assert history.best_epoch == int(frame.val_loss.idxmin())


def test_the_cross_entropy_is_recorded_whatever_the_loss_and_can_select_the_epoch():
    model, data = small_esr(), toy()

    def doubled(out, y):  # a training objective other than the cross-entropy
        return 2 * member_cross_entropy(out, y)

    history = fit(model, data, data, cfg(3, loss=doubled, select="val_ce"))
    frame = history.to_frame()
    torch.testing.assert_close(torch.tensor(frame.val_loss.to_numpy()),
                               torch.tensor(2 * frame.val_ce.to_numpy()))
    assert history.best_epoch == int(frame.val_ce.idxmin())
    x, y = data.tensors
    loss = member_cross_entropy(predict(model, x, device="cpu", batch_size=16), y).item()
    assert loss == pytest.approx(frame.val_ce.min(), rel=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_best_validation_weights_are_restored(precision):
    model, data = small_esr(), toy()
    history = fit(model, data, data, cfg(3, precision=precision))
    x, y = data.tensors
    logits = predict(model, x, device="cpu", precision=precision, batch_size=16)
    loss = member_cross_entropy(logits, y).item()
    assert loss == pytest.approx(history.to_frame().val_loss.min(), rel=1e-5)


def test_freeze_keeps_weights_and_batchnorm_statistics():
    model, data = small_esr(), toy()
    freeze(model.base)
    base, branches = state(model.base), state(model.branches)
    fit(model, data, None, cfg(lr=0.1))
    assert same(base, state(model.base))  # running_mean/var included
    assert not same(branches, state(model.branches))


def test_param_group_learning_rates_are_applied():
    model, data = small_esr(), toy(n=16)
    x, y = data.tensors
    reference = copy.deepcopy(model).train()
    member_cross_entropy(reference(x), y).backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = [{"params": model.base, "lr": 0.001}, {"params": model.branches, "lr": 0.1}]
    fit(model, data, None, cfg(optimizer=sgd(0.5, momentum=0.0), precision="fp32"),
        groups=groups)
    for (name, p), (_, ref) in zip(model.named_parameters(), reference.named_parameters()):
        lr = 0.001 if name.startswith("base.") else 0.1
        torch.testing.assert_close(before[name] - p.detach(), lr * ref.grad, rtol=1e-4, atol=1e-6)


def test_param_groups_must_cover_trainable_parameters():
    model = small_esr()
    with pytest.raises(ValueError, match="no param group"):
        fit(model, toy(), None, cfg(), groups=[{"params": model.base}])


def random_flip(x, y):
    flip = torch.rand(len(x), device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x), y


def test_resume_equals_uninterrupted(tmp_path):
    data, val = toy(), toy(n=16, seed=1)
    config = cfg(4, augment=random_flip)
    straight = small_esr()
    h_straight = fit(straight, data, val, config, checkpoint=tmp_path / "a")
    interrupted = small_esr()
    fit(interrupted, data, val, config.replace(epochs=2), checkpoint=tmp_path / "b")
    resumed = small_esr()  # a fresh process would rebuild the model from scratch
    h_resumed = fit(resumed, data, val, config, checkpoint=tmp_path / "b")
    assert (tmp_path / "b" / "last.pt").exists()
    assert same(state(straight), state(resumed))
    assert h_resumed.to_frame().drop(columns="seconds").equals(
        h_straight.to_frame().drop(columns="seconds"))


def test_nan_loss_names_epoch_and_batch():
    x, y = toy().tensors
    x = x.clone()
    x[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 1.*learning rate"):
        fit(small_esr(), TensorDataset(x, y), None, cfg(lr=0.1, batch_size=48))


def test_empty_and_wrong_data():
    empty = TensorDataset(torch.zeros(0, 1, 48, 48), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="train is empty"):
        fit(small_esr(), empty, None, cfg())
    with pytest.raises(TypeError, match="torch Dataset"):
        fit(small_esr(), [(torch.zeros(1, 48, 48), 0)], None, cfg())
    with pytest.raises(TypeError, match="optimizer must be"):
        cfg(optimizer="lbfgs")
    with pytest.raises(ValueError, match="torch.optim has no class 'LBFGSX'"):
        Optimizer("LBFGSX", lr=0.1)
    with pytest.raises(ValueError, match="lr > 0"):
        Optimizer("SGD", lr=0)


def test_soft_labels_and_dataloader_and_adam():
    x, y = toy().tensors
    soft = 0.9 * F.one_hot(y, 2).float() + 0.05
    history = fit(small_esr(), DataLoader(TensorDataset(x, soft), batch_size=16), None,
                  cfg(2, optimizer=adam(1e-3)))
    assert len(history) == 2 and 0 <= history.to_frame().train_acc_ens.iloc[-1] <= 1


def face_dataset(n=24, target="label"):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, n)
    mixtures = np.eye(8, dtype=np.float32)[labels]
    va = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    return FaceDataset(images=rng.integers(0, 255, (n, 64, 64), dtype=np.uint8), labels=labels,
                       subjects=np.arange(n), mixtures=mixtures, valence_arousal=va,
                       target=target)


def test_face_dataset_input():
    data = face_dataset().with_options(channels=1)
    model = ESR(n_branches=2, width=0.25)
    history = fit(model, data, data, cfg(lr=0.01))
    assert "val_acc_ens" in history.to_frame()


def test_early_stopping_stops():
    model, data = small_esr(), toy(n=16)
    history = fit(model, data, toy(n=16, seed=5), cfg(30, lr=0.5, early_stopping=1))
    assert len(history) < 30


@pytest.mark.parametrize("strategy", ["fixed", "varied", "frozen"])
def test_algorithm1_grows_branches_and_treats_trained_parts(strategy):
    model, data = small_esr(n_branches=1), toy()
    subsets = [np.arange(0, 32), np.arange(16, 48)]
    torch.manual_seed(0)
    grown, histories = train_esr(model, data, subsets, data, cfg(2), strategy=strategy,
                                 lr_trained=0.01)
    assert len(grown.branches) == 2 and len(histories) == 2
    assert "train_acc_2" in histories[1].to_frame() and "train_acc_2" not in histories[0].to_frame()


def test_algorithm1_loss_sums_over_existing_branches():
    members = []

    def spy(logits, targets):
        members.append(logits.shape[1])
        return member_cross_entropy(logits, targets)

    train_esr(small_esr(n_branches=1), toy(n=16), [np.arange(16)] * 3, None, cfg(loss=spy))
    assert members == [1, 2, 3]  # one mini-batch per stage, eq. (1) over existing branches


def test_algorithm1_frozen_through_train_esr():
    model, data = small_esr(n_branches=1), toy()
    torch.manual_seed(1)
    grown, _ = train_esr(model, data, [np.arange(48)], None, cfg(), strategy="frozen")
    base, b1 = state(grown.base), state(grown.branches[0])
    grown2, _ = train_esr(small_esr(n_branches=1), data, [np.arange(48), np.arange(48)], None,
                          cfg(), strategy="frozen")
    # Stage 1 is identical (same seed), so after stage 2 the frozen parts must still match it.
    assert same(base, state(grown2.base)) and same(b1, state(grown2.branches[0]))
    assert not same(b1, state(grown2.branches[1]))


def test_algorithm1_varied_updates_earlier_branches():
    data = toy()
    one, _ = train_esr(small_esr(n_branches=1), data, [np.arange(48)], None, cfg(),
                       strategy="varied")
    two, _ = train_esr(small_esr(n_branches=1), data, [np.arange(48), np.arange(48)], None,
                       cfg(), strategy="varied")
    assert not same(state(one.branches[0]), state(two.branches[0]))
    assert not same(state(one.base), state(two.base))


def test_interleaved_trains_one_branch_per_batch():
    model, data = small_esr(n_branches=1), toy(n=32)
    grown, histories = train_esr(model, data, [np.arange(16), np.arange(16, 32)], None,
                                 cfg(batch_size=32), strategy="interleaved")
    assert len(grown.branches) == 2 and len(histories) == 1


def test_interleaved_step_moves_only_its_branch():
    """With SGD momentum (the paper's 0.9), a mini-batch must leave every other branch
    bit-identical: weights, BatchNorm statistics, everything in its state dict."""
    model, data = small_esr(n_branches=3), toy(n=16)
    snapshots = []

    def snapshot(epoch, m):
        snapshots.append({k.removeprefix("esr."): v.clone() for k, v in m.state_dict().items()})
    _, (history,) = train_esr(model, data, [np.arange(16)] * 3, None, cfg(),
                              strategy="interleaved", on_epoch_end=snapshot)
    # One mini-batch per epoch; three subsets give the budget of three sequential stages.
    assert len(history) == 3
    start = {k: v for k, v in state(small_esr(n_branches=3)).items()}
    steps = [start, *snapshots]
    for step in range(3):  # step k updates branch k (and the base) only
        before, after = steps[step], steps[step + 1]
        for b in range(3):
            keys = [k for k in before if k.startswith(f"branches.{b}.")]
            unchanged = all(torch.equal(before[k], after[k]) for k in keys)
            assert unchanged == (b != step), (step, b)
        assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("base."))


@pytest.mark.parametrize("strategy", ["fixed", "varied", "frozen", "interleaved"])
def test_every_branch_starts_from_its_own_reproducible_weights(strategy, monkeypatch):
    """Branches of an ESR start pairwise different for every strategy, and the same on a
    rerun with the same seed, whatever the training in between drew from the RNG."""
    added = []
    original = ESR.add_branch

    def record(self, init="fresh"):
        branch = original(self, init)
        added.append({k: v.clone() for k, v in branch.state_dict().items()})
        return branch

    monkeypatch.setattr(ESR, "add_branch", record)

    def starts(seed):
        added.clear()
        model = ESR(level=3, n_branches=1, n_classes=2, width=0.25, seed=seed)
        train_esr(model, toy(n=16), [np.arange(16)] * 4, None, cfg(), strategy=strategy)
        return [dict(a) for a in added]

    first, again, other = starts(0), starts(0), starts(1)
    assert len(first) == 4
    for a, b in zip(first, again):
        assert same(a, b)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not same(first[i], first[j]), (i, j)
    assert not same(first[1], other[1])


def test_esr_branches_start_like_the_traditional_ensemble_networks():
    """Same seed: branch b of ESR-4 at level 3 starts as the last two convolutions and the
    classifier of TE network b, the base as network 0's first three convolutions, and the
    single network as TE network 0."""
    esr = ESR(level=3, n_branches=4, n_classes=2, width=0.25, seed=7)
    te = ESR(level=0, n_branches=4, n_classes=2, width=0.25, seed=7)
    for b in range(4):
        network = te.branches[b]
        assert same_values(esr.branches[b].features, network.features[3:])
        assert same_values(esr.branches[b].fc, network.fc)
    assert same_values(esr.base, te.branches[0].features[:3])
    assert same_values(single_network(n_classes=2, width=0.25, seed=7).branches[0],
                       te.branches[0])


def test_frozen_strategy_returns_a_trainable_model():
    grown, _ = train_esr(small_esr(n_branches=1), toy(), [np.arange(48)] * 2, None, cfg(),
                         strategy="frozen")
    assert all(p.requires_grad for p in grown.parameters())


def test_epochs_per_branch():
    _, histories = train_esr(small_esr(n_branches=1), toy(n=16), [np.arange(16)] * 3, None,
                             cfg(), epochs=[3, 1, 1])
    assert [len(h) for h in histories] == [3, 1, 1]
    with pytest.raises(ValueError, match="one per branch"):
        train_esr(small_esr(n_branches=1), toy(n=16), [np.arange(16)] * 3, None, cfg(),
                  epochs=[3, 1])


def test_fit_passes_several_targets_and_a_named_forward():
    """Samples (x, label, map) reach the loss as a tuple; ``forward`` picks the method."""
    class WithMap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
            self.fc = torch.nn.Linear(1, 2)

        def forward(self, x):
            return self.forward_with_map(x)[0]

        def forward_with_map(self, x):
            m = self.conv(x)  # (B, 1, H, W)
            return self.fc(m.mean((2, 3))).unsqueeze(1), m

    x, y = toy(n=16).tensors
    maps = x.clone()
    seen = []

    def loss(out, targets):
        (logits, m), (labels, target_map) = out, targets
        seen.append((logits.shape, m.shape, labels.shape, target_map.shape))
        return member_cross_entropy(logits, labels) + (m - target_map).pow(2).mean()

    history = fit(WithMap(), TensorDataset(x, y, maps), TensorDataset(x, y, maps),
                  cfg(loss=loss, forward="forward_with_map"))
    assert seen[0] == (torch.Size([16, 1, 2]), torch.Size([16, 1, 48, 48]),
                       torch.Size([16]), torch.Size([16, 1, 48, 48]))
    assert "val_acc_1" in history.to_frame()
    with pytest.raises(ValueError, match="no such method"):
        fit(WithMap(), TensorDataset(x, y), None, cfg(forward="nope"))


def test_train_esr_arguments():
    with pytest.raises(ValueError, match="one branch"):
        train_esr(small_esr(n_branches=2), toy(), [np.arange(8)], None, cfg())
    with pytest.raises(ValueError, match="strategy"):
        train_esr(small_esr(n_branches=1), toy(), [np.arange(8)], None, cfg(), strategy="x")


def test_finetune_affect_trains_only_affect_heads():
    torch.manual_seed(0)
    model = ESR(arch="wild", n_branches=2, width=0.125)
    data = face_dataset(n=16, target="valence_arousal").with_options(channels=3)
    before = state(model)
    model, histories = finetune_affect(model, data, [np.arange(16), np.arange(8)], data,
                                       cfg(lr=0.01))
    after = state(model)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(".affect." in k for k in moved)
    assert {k.split(".")[1] for k in moved} == {"0", "1"}
    assert "val_rmse_ens" in histories[1].to_frame() and len(histories) == 2


def test_train_bagging_trains_each_network_on_its_subset():
    torch.manual_seed(0)
    model, data = ESR(level=0, n_branches=2, n_classes=2, width=0.25), toy()
    before = state(model)
    model, histories = train_bagging(model, data, [np.arange(24), np.arange(24, 48)], None,
                                     cfg())
    assert len(histories) == 2 and all("train_acc_1" in h.to_frame() for h in histories)
    for k in range(2):
        prefix = f"branches.{k}."
        trained = {prefix + n: v for n, v in state(model.branches[k]).items()}
        assert not same({n: v for n, v in before.items() if n.startswith(prefix)}, trained)
    with pytest.raises(TypeError, match="level=0"):
        train_bagging(small_esr(), data, [np.arange(8)] * 2, None, cfg())


def test_balanced_subset():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 6)
    idx = balanced_subset(labels, 5, seed=0)
    assert np.bincount(labels[idx]).tolist() == [5, 3, 5]
    assert np.array_equal(idx, balanced_subset(labels, 5, seed=0))
    assert len(np.unique(idx)) == len(idx)
    with pytest.raises(ValueError, match="n_per_class"):
        balanced_subset(labels, 0)


def test_quadrants():
    va = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5], [0.0, 0.0]])
    assert quadrants(va).tolist() == [0, 1, 2, 3, 0]
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        quadrants(np.zeros(3))


@pytest.mark.parametrize("strategy, lr_base, lr_old", [
    ("fixed", 0.1, 0.1), ("varied", 0.1, 0.02), ("frozen", None, None)])
def test_algorithm1_learning_rates_per_treatment(monkeypatch, strategy, lr_base, lr_old):
    import fernb.train.esr as algorithm
    seen = []

    def spy(model, *args, groups=None, **kwargs):
        seen.append({id(p): g["lr"] for g in groups for p in
                     (g["params"].parameters() if isinstance(g["params"], torch.nn.Module)
                      else g["params"]) if p.requires_grad})
        return History()

    monkeypatch.setattr(algorithm, "fit", spy)
    model, _ = train_esr(small_esr(n_branches=1), toy(), [np.arange(8)] * 2, None,
                         cfg(lr=0.1), strategy=strategy, lr_trained=0.02)
    def rate(module):
        return {seen[1].get(id(p)) for p in module.parameters()}

    assert rate(model.branches[1]) == {0.1}
    assert rate(model.base) == {lr_base} and rate(model.branches[0]) == {lr_old}


def test_on_epoch_end_sees_every_epoch_and_the_model():
    model = single_network(n_classes=3, width=0.25)
    x, y = torch.rand(12, 1, 48, 48), torch.randint(0, 3, (12,))
    seen = []
    fit(model, TensorDataset(x, y), None, cfg(3, lr=0.01),
        on_epoch_end=lambda epoch, m: seen.append((epoch, m is model, m.training)))
    assert seen == [(1, True, True), (2, True, True), (3, True, True)]


def test_targets_out_of_range_are_named_on_the_first_batch():
    model = single_network(n_classes=3, width=0.25)
    x, y = torch.rand(8, 1, 48, 48), torch.full((8,), 5)
    with pytest.raises(ValueError, match=r"\[0, 2\].*n_classes"):
        fit(model, TensorDataset(x, y), None, cfg(lr=0.01))


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    x, y = torch.rand(12, 1, 48, 48), torch.randint(0, 3, (12,))
    data = TensorDataset(x, y)
    history = fit(single_network(n_classes=3, width=0.25), data, None, cfg(1, lr=0.01),
                  checkpoint=tmp_path)
    resumed = fit(single_network(n_classes=3, width=0.25), data, None, cfg(2, lr=0.01),
                  checkpoint=tmp_path)  # same settings, more epochs: resumes
    assert resumed.epochs[0] == history.epochs[0] and len(resumed) == 2
    with pytest.raises(ValueError, match="other settings"):
        fit(single_network(n_classes=3, width=0.25), data, None, cfg(3, lr=0.1),
            checkpoint=tmp_path)


def test_the_kept_epoch_is_the_best_by_the_selection_metric():
    data, val = toy(), toy(n=16, seed=3)
    history = fit(small_esr(), data, val, cfg(4, select="val_acc_ens", maximize=True))
    frame = history.to_frame()
    assert history.best_epoch == int(frame["val_acc_ens"].idxmax())
    with pytest.raises(ValueError, match="select='val_f1' is not a history column"):
        fit(small_esr(), data, val, cfg(select="val_f1"))
