"""Soft labels (Gan, Chen & Xu 2019): eqs. (2)-(5), (7), Table 1 and the gamma ensemble."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from fernb.ensemble import ScoreAverage, SoftmaxSum
from fernb.losses import SoftLabelLoss, member_cross_entropy
from fernb.models.members import Members
from fernb.seeding import derive_seed, seeded
from fernb.softlabels import (GAMMA_GRID, PAPER_SETTINGS, TABLE_1, TABLE_1_CLASSES, Violation,
                              class_means, compare_soft_labels, construct_soft_labels,
                              diagonal_violations, logit_spread, mean_probabilities,
                              mixture_nll, normalize_rows, perturb, row_entropy,
                              restrict_soft_labels, select_gammas, soft_labels_from_model,
                              train_gamma_ensemble)
from fernb.train import FitConfig, Schedule, fit, sgd

# Table 1 of the paper, transcribed again here (rows AN, DI, FE, HA, SA, SU, NE).
PAPER_TABLE_1 = np.array([
    [0.6247, 0.0136, 0.1023, 0.0419, 0.1069, 0.0202, 0.0905],
    [0.2174, 0.5696, 0.0833, 0.0090, 0.1147, 0.0001, 0.0059],
    [0.0977, 0.0038, 0.5115, 0.0224, 0.1858, 0.0869, 0.0919],
    [0.0226, 0.0009, 0.0193, 0.8416, 0.0245, 0.0235, 0.0675],
    [0.1060, 0.0051, 0.1269, 0.0389, 0.5671, 0.0123, 0.1437],
    [0.0269, 0.0004, 0.0870, 0.0464, 0.0163, 0.8000, 0.0230],
    [0.0655, 0.0001, 0.0740, 0.0769, 0.1673, 0.0133, 0.6030],
])

PROBS = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
LABELS = np.array([0, 0, 1, 2])


def test_table_1_transcription_rows_sum_to_one_and_peak_on_their_class():
    assert TABLE_1_CLASSES == ("anger", "disgust", "fear", "happiness", "sadness", "surprise",
                               "neutral")
    np.testing.assert_array_equal(TABLE_1.to_numpy(), PAPER_TABLE_1)
    np.testing.assert_allclose(TABLE_1.to_numpy().sum(1), 1, atol=1.5e-4)  # 4-decimal rounding
    assert diagonal_violations(TABLE_1) == []


def test_eq2_class_means_and_eq3_normalisation_by_hand():
    np.testing.assert_allclose(class_means(PROBS, LABELS),
                               [[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(normalize_rows([[2, 1, 1], [0, 3, 1]]),
                               [[0.5, 0.25, 0.25], [0, 0.75, 0.25]])
    unnormalised = np.array([[1.6, 0.2, 0.2], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(construct_soft_labels(unnormalised, [0, 1, 2]),
                               [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])


def test_class_means_errors():
    with pytest.raises(ValueError, match=r"classes \[2\] have no samples"):
        class_means(PROBS[:3], LABELS[:3])
    with pytest.raises(ValueError, match=r"integer classes in \[0, 2\]"):
        class_means(PROBS, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="4 distributions but 3 labels"):
        class_means(PROBS, [0, 1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        class_means(-PROBS, LABELS)
    with pytest.raises(ValueError, match=r"rows \[1\] are all zero"):
        normalize_rows([[1, 0], [0, 0]])


def test_violations_are_reported_and_the_policy_applies():
    d = np.array([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.2, 0.4, 0.4]])  # row 2: a tie, allowed
    assert diagonal_violations(d) == [Violation(row=1, argmax=0, own=0.3, maximum=0.6)]
    with pytest.raises(ValueError, match="row 1: max 0.6000 at class 0, own 0.3000"):
        construct_soft_labels(d, [0, 1, 2])
    with pytest.warns(UserWarning, match="peak on another class"):
        warned = construct_soft_labels(d, [0, 1, 2], on_violation="warn")
    np.testing.assert_allclose(warned, d)
    np.testing.assert_allclose(construct_soft_labels(d, [0, 1, 2], on_violation="ignore"), d)
    with pytest.raises(ValueError, match="on_violation must be one of"):
        construct_soft_labels(d, [0, 1, 2], on_violation="skip")
    with pytest.raises(ValueError, match="square"):
        diagonal_violations(d[:2])


def test_eq4_on_table_1_by_hand():
    # Happiness row, gamma = 2: squares 0.00051076, 0.00000081, 0.00037249, 0.70829056,
    # 0.00060025, 0.00055225, 0.00455625 sum to 0.71488337.
    expected = [0.0007145, 0.0000011, 0.0005211, 0.9907778, 0.0008396, 0.0007725, 0.0063734]
    np.testing.assert_allclose(perturb(PAPER_TABLE_1, 2.0)[3], expected, atol=1e-6)
    # [0.64, 0.32, 0.04] ** 0.5 = [0.8, 0.565685, 0.2], sum 1.565685; 0.8 / 1.565685 =
    # 0.510958, 0.2 / 1.565685 = 0.127740 and the rest 0.361302.
    np.testing.assert_allclose(perturb([[0.64, 0.32, 0.04]], 0.5),
                               [[0.510958, 0.361302, 0.127740]], atol=1e-6)
    np.testing.assert_allclose(perturb(PAPER_TABLE_1, 1.0),
                               PAPER_TABLE_1 / PAPER_TABLE_1.sum(1, keepdims=True))


def test_eq4_keeps_each_rows_order_and_gamma_sets_the_smoothness():
    order = np.argsort(-PAPER_TABLE_1, axis=1, kind="stable")
    entropies = []
    for gamma in GAMMA_GRID:
        d = perturb(PAPER_TABLE_1, gamma)
        np.testing.assert_allclose(d.sum(1), 1)
        np.testing.assert_array_equal(np.argsort(-d, axis=1, kind="stable"), order)
        entropies.append(row_entropy(d))
    assert np.all(np.diff(np.array(entropies), axis=0) < 0)  # larger gamma, sharper rows
    np.testing.assert_allclose(row_entropy([[0.5, 0.5], [1, 0]]), [math.log(2), 0])
    for gamma in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="gamma must be a positive number"):
            perturb(PAPER_TABLE_1, gamma)


def test_eq5_soft_label_loss_by_hand():
    d = torch.tensor([[0.5, 0.5], [0.1, 0.9]])
    logits = torch.tensor([[[math.log(3), 0.0]]])  # p = [0.75, 0.25]
    expected = 0.5 * -math.log(0.75) + 0.5 * -math.log(0.25)  # 0.836988
    loss = SoftLabelLoss(d)
    assert loss(logits, torch.tensor([0])).item() == pytest.approx(expected, abs=1e-6)
    assert loss(logits, (torch.tensor([0]), torch.zeros(1))).item() == pytest.approx(expected,
                                                                                      abs=1e-6)
    two = torch.cat([logits, logits], dim=1)  # two members: their losses add up
    assert loss(two, torch.tensor([0])).item() == pytest.approx(2 * expected, abs=1e-6)


def test_eq5_is_hard_cross_entropy_for_one_hot_rows_and_kl_plus_entropy():
    torch.manual_seed(0)
    logits = torch.randn(6, 2, 7, requires_grad=True)
    y = torch.randint(0, 7, (6,))
    hard = SoftLabelLoss(torch.eye(7))(logits, y)
    assert torch.allclose(hard, member_cross_entropy(logits, y))
    d = torch.from_numpy(PAPER_TABLE_1 / PAPER_TABLE_1.sum(1, keepdims=True)).float()
    soft = SoftLabelLoss(d)(logits, y)
    kl = sum(F.kl_div(logits[:, m].log_softmax(1), d[y], reduction="batchmean") for m in range(2))
    entropy = -(d[y] * d[y].log()).sum(1).mean() * 2
    assert soft.item() == pytest.approx((kl + entropy).item(), abs=1e-5)
    soft.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_soft_label_loss_errors():
    with pytest.raises(ValueError, match=r"\(C, C\) matrix"):
        SoftLabelLoss(torch.ones(2, 3) / 3)
    with pytest.raises(ValueError, match="must sum to 1"):
        SoftLabelLoss(torch.tensor([[0.6, 0.6], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="non-negative"):
        SoftLabelLoss(torch.tensor([[1.5, -0.5], [0.5, 0.5]]))
    loss = SoftLabelLoss(torch.eye(3))
    with pytest.raises(ValueError, match="class indices"):
        loss(torch.zeros(2, 1, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="3 x 3 but the model has 4 outputs"):
        loss(torch.zeros(2, 1, 4), torch.tensor([0, 1]))


def test_eq7_averages_the_last_layers_scores_not_probabilities():
    logits = torch.tensor([[[0.0, 0.5, -20.0], [0.0, -1.0, 3.0]]])
    # Scores: mean [0, -0.25, -8.5] -> class 0. Probabilities: [0.377, 0.623, 0] and
    # [0.047, 0.017, 0.936] average to [0.212, 0.320, 0.468] -> class 2.
    assert torch.allclose(ScoreAverage().scores(logits), torch.tensor([[0.0, -0.25, -8.5]]))
    assert ScoreAverage()(logits).item() == 0
    assert SoftmaxSum()(logits).item() == 2


class _LogOf(nn.Module):
    """A 'network' whose softmax returns its input distributions unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.log()


def test_constructor_from_a_model_uses_its_softmax():
    data = TensorDataset(torch.tensor(PROBS, dtype=torch.float32), torch.tensor(LABELS))
    d = soft_labels_from_model(Members([_LogOf()]), data, LABELS, device="cpu")
    np.testing.assert_allclose(d, [[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]],
                               atol=1e-6)
    with pytest.raises(ValueError, match="members = 1"):
        soft_labels_from_model(Members([_LogOf(), _LogOf()]), data, LABELS, device="cpu")
    with pytest.raises(ValueError, match="pass labels="):
        soft_labels_from_model(Members([_LogOf()]), data, device="cpu")


def test_compare_soft_labels_by_hand():
    d = np.array([[0.8, 0.15, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]])
    r = np.array([[0.8, 0.05, 0.15], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]])
    same = compare_soft_labels(d, d)
    assert same["mean_abs_diff"] == 0 and same["js_distance"] == pytest.approx(0, abs=1e-7)
    assert same["offdiag_pearson"] == pytest.approx(1) and same["top_other_agreement"] == 1
    out = compare_soft_labels(d, r)
    assert out["mean_abs_diff"] == pytest.approx(0.2 / 9)
    assert out["max_abs_diff"] == pytest.approx(0.1)
    # Off-diagonal deviations from 0.1: [.05, -.05, 0, 0, -.05, .05] and
    # [-.05, .05, 0, 0, -.05, .05]: covariance 0.
    assert out["offdiag_pearson"] == pytest.approx(0, abs=1e-12)
    assert out["top_other_agreement"] == pytest.approx(2 / 3)  # row 0 differs
    assert 0 < out["js_distance"] < 1
    uniform = np.full((3, 3), 0.1) + np.eye(3) * 0.7
    assert np.isnan(compare_soft_labels(d, uniform)["offdiag_pearson"])
    with pytest.raises(ValueError, match="one shape"):
        compare_soft_labels(d, np.eye(2))


def test_select_gammas_picks_the_best_window():
    acc = [0.60, 0.68, 0.69, 0.69, 0.69, 0.71, 0.70, 0.68, 0.69, 0.60, 0.55, 0.50, 0.45]
    # Windows of 3 from gamma 0.8: means 0.690, 0.697, 0.700, 0.697, 0.690, ...
    assert select_gammas(GAMMA_GRID, acc, 3) == (1.2, 1.4, 1.6)
    assert select_gammas(GAMMA_GRID, acc, 1) == (1.4,)
    assert select_gammas([1.0, 2.0, 3.0], [0.5, 0.5, 0.5], 2) == (1.0, 2.0)  # tie: smaller
    with pytest.raises(ValueError, match="ascending"):
        select_gammas([2.0, 1.0], [0.5, 0.5], 1)
    with pytest.raises(ValueError, match=r"n must be in \[1, 2\]"):
        select_gammas([1.0, 2.0], [0.5, 0.5], 3)
    with pytest.raises(ValueError, match="one accuracy per gamma"):
        select_gammas([1.0, 2.0], [0.5], 1)


def test_paper_settings():
    assert GAMMA_GRID == (0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4, 2.6, 2.8)
    fer, sfew, raf = PAPER_SETTINGS["fer2013"], PAPER_SETTINGS["sfew"], PAPER_SETTINGS["rafdb"]
    assert fer.gammas == (0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0) and fer.n_members == 8
    assert sfew.gammas == (1.6, 1.8, 2.0, 2.2, 2.4, 2.6) and sfew.n_members == 6
    assert raf.gammas == (1.8, 2.0, 2.2, 2.4, 2.6, 2.8) and raf.n_members == 6
    # 8000 iterations x 48 / 28,709 images = 13.4 epochs; the decay every 5000 = 8.4 epochs.
    config = fer.fit_config(28_709)
    assert (config.epochs, config.lr, config.batch_size) == (13, 0.01, 48)
    assert config.optimizer == sgd(0.01, momentum=0.9, weight_decay=0.0005)
    assert config.schedule == Schedule("StepLR", step_size=8, gamma=0.1)
    assert sfew.fit_config(958).epochs == 25 and sfew.fit_config(958).schedule is None
    raf_config = raf.fit_config(12_271)  # 23.5 epochs, decay every 11.7
    assert raf_config.epochs == 23 and raf_config.schedule.options["step_size"] == 12
    assert fer.fit_config(28_709, device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="n_train"):
        fer.fit_config(0)


def _toy_data(n: int = 24) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    x = torch.randn(n, 4, generator=g) + 2 * F.one_hot(y, 4).float()
    return TensorDataset(x, y)


FIT = FitConfig(epochs=2, optimizer=sgd(0.1), batch_size=8, device="cpu", seed=5)
D3 = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])


def test_gamma_ensemble_trains_each_member_on_its_perturbed_labels(tmp_path):
    data = _toy_data()
    model, histories = train_gamma_ensemble(lambda: nn.Linear(4, 3), D3, [0.5, 1.0, 2.0], data,
                                            None, FIT, checkpoint=tmp_path)
    out = model(data.tensors[0])
    assert out.shape == (24, 3, 3) and torch.isfinite(out).all() and len(histories) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "member_0_gamma_0.5", "member_1_gamma_1", "member_2_gamma_2"]
    with seeded(5, 1):  # member 1 by hand: its seed, its fit seed, gamma = 1
        alone = Members([nn.Linear(4, 3)])
    fit(alone, data, None, FIT.replace(loss=SoftLabelLoss(perturb(D3, 1.0)),
                                       seed=derive_seed(5, "fit", 1)))
    assert torch.allclose(alone(data.tensors[0])[:, 0], out[:, 1])
    again, _ = train_gamma_ensemble(lambda: nn.Linear(4, 3), D3, [0.5, 1.0, 2.0], data, None,
                                    FIT, checkpoint=tmp_path)  # resumes: nothing left
    assert torch.equal(again(data.tensors[0]), out)


def test_identical_start_leaves_gamma_the_only_difference():
    data = _toy_data()
    same, _ = train_gamma_ensemble(lambda: nn.Linear(4, 3), D3, [1.5, 1.5], data, None, FIT,
                                   identical_start=True)
    out = same(data.tensors[0])
    assert torch.equal(out[:, 0], out[:, 1])
    differ, _ = train_gamma_ensemble(lambda: nn.Linear(4, 3), D3, [0.5, 3.0], data, None, FIT,
                                     identical_start=True)
    out = differ(data.tensors[0])
    assert not torch.allclose(out[:, 0], out[:, 1])
    with pytest.raises(ValueError, match="gammas is empty"):
        train_gamma_ensemble(lambda: nn.Linear(4, 3), D3, [], data, None, FIT)
    with pytest.raises(ValueError, match="gamma must be a positive number"):
        train_gamma_ensemble(lambda: nn.Linear(4, 3), D3, [1.0, 0.0], data, None, FIT)


def test_restrict_soft_labels_to_another_datasets_classes_by_hand():
    d = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.4, 0.5]])
    # Classes (b, a) of (a, b, c): rows b and a, columns b and a, renormalised:
    # b: [0.7, 0.2] / 0.9, a: [0.3, 0.6] / 0.9.
    out = restrict_soft_labels(d, ("a", "b", "c"), ("b", "a"))
    np.testing.assert_allclose(out, [[0.7 / 0.9, 0.2 / 0.9], [1 / 3, 2 / 3]])
    same = restrict_soft_labels(TABLE_1, TABLE_1_CLASSES, TABLE_1_CLASSES)
    np.testing.assert_allclose(same, PAPER_TABLE_1 / PAPER_TABLE_1.sum(1, keepdims=True))
    with pytest.raises(ValueError, match=r"no row for \['contempt'\]"):
        restrict_soft_labels(d, ("a", "b", "c"), ("a", "contempt"))
    with pytest.raises(ValueError, match="4 classes were named"):
        restrict_soft_labels(d, ("a", "b", "c", "d"), ("a",))


def test_mean_probabilities_average_each_members_softmax():
    # Member 1 scores [0, log 3] -> [1/4, 3/4]; member 2 [0, 0] -> [1/2, 1/2]; mean [3/8, 5/8].
    logits = np.array([[[0.0, math.log(3)], [0.0, 0.0]]])
    np.testing.assert_allclose(mean_probabilities(logits), [[3 / 8, 5 / 8]])
    np.testing.assert_allclose(mean_probabilities(logits[:, 0]), [[1 / 4, 3 / 4]])
    with pytest.raises(ValueError, match="logits must be"):
        mean_probabilities(np.zeros(3))


def test_mixture_nll_by_hand_and_its_minimum_is_the_mixtures_entropy():
    mixtures = np.array([[0.7, 0.3, 0.0], [1.0, 0.0, 0.0]])
    probs = np.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]])
    # -(0.7 ln 0.5 + 0.3 ln 0.25) = 0.9011; -ln 0.5 = 0.6931.
    np.testing.assert_allclose(mixture_nll(probs, mixtures), [0.901091, 0.693147], atol=1e-6)
    np.testing.assert_allclose(mixture_nll(mixtures, mixtures), row_entropy(mixtures),
                               atol=1e-9)
    with pytest.raises(ValueError, match="one shape"):
        mixture_nll(probs[:, :2], mixtures)


def test_logit_spread_grows_with_gamma_at_a_members_optimum():
    """At its optimum a member's scores are gamma log d + constant (eqs. 4-6): the spread of
    eq. (7)'s scores is proportional to gamma, and the member's arg-max never changes."""
    d = PAPER_TABLE_1
    gammas = [0.5, 1.0, 2.0]
    logits = np.stack([g * np.log(d) + 3.0 for g in gammas], axis=1)  # (C, M, C), faces = rows
    spread = logit_spread(logits)
    np.testing.assert_allclose(spread / spread[1], gammas)
    assert (logits.argmax(-1) == np.arange(7)[:, None]).all()
    np.testing.assert_allclose(torch.from_numpy(logits).softmax(-1).numpy(),
                               np.stack([perturb(d, g) for g in gammas], axis=1), atol=1e-12)
