"""Predictions and metrics."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fernb import evaluate as V
from fernb.data.datasets import FaceDataset
from fernb.ensemble import TopTwoVote


class TwoMembers(nn.Module):
    """Tiny (B, 2, 3) ensemble with dropout, so eval mode changes its output."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleList([nn.Linear(16, 3) for _ in range(2)])
        self.drop = nn.Dropout(0.9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.drop(x.flatten(1))
        return torch.stack([h(f) for h in self.heads], dim=1)


def _images(n=10):
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))


def test_predict_shapes_mode_and_no_grad():
    torch.manual_seed(0)
    model = TwoMembers().train()
    x = _images()
    out = V.predict(model, x, batch_size=3, precision="fp32")
    assert out.shape == (10, 2, 3) and out.dtype == torch.float32
    assert not out.requires_grad
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        assert torch.allclose(out, model(x), atol=1e-6)  # deterministic: dropout was off
    assert not model.training  # eval stays eval


def test_predict_accepts_datasets_and_loaders():
    torch.manual_seed(0)
    model = TwoMembers()
    x = _images(7)
    y = torch.zeros(7, dtype=torch.long)
    reference = V.predict(model, x)
    assert torch.allclose(V.predict(model, TensorDataset(x, y), batch_size=2), reference)
    assert torch.allclose(V.predict(model, DataLoader(TensorDataset(x, y), batch_size=4)),
                          reference)
    face = FaceDataset(images=(x[:, 0] * 255).round().to(torch.uint8).numpy(),
                       labels=np.zeros(7), subjects=np.arange(7))
    expected = V.predict(model, face.tensors()[0])
    assert torch.allclose(V.predict(model, face, batch_size=5), expected)


def test_predict_single_network_and_bad_input():
    linear = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    assert V.predict(linear, _images(5)).shape == (5, 1, 4)
    with pytest.raises(TypeError, match="DataLoader"):
        V.predict(linear, [[0.0]])
    with pytest.raises(ValueError, match="batch_size"):
        V.predict(linear, _images(5), batch_size=0)


def test_accuracy_recall_and_confusion():
    labels = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 2])
    classes = ("a", "b", "c")
    assert V.accuracy(pred, labels) == pytest.approx(4 / 6)
    recall = V.per_class_recall(pred, labels, classes)
    assert recall.tolist() == [0.5, 1.0, 0.5]
    cm = V.normalized_confusion(pred, labels, classes)
    np.testing.assert_allclose(cm.to_numpy(), [[0.5, 0.5, 0], [0, 1, 0], [0.5, 0, 0.5]])
    np.testing.assert_allclose(np.diag(cm), recall)
    assert list(cm.index) == list(classes)
    counts = V.normalized_confusion(pred, labels, classes, normalize=None)
    assert counts.to_numpy().sum() == 6


def test_absent_class_has_nan_recall():
    recall = V.per_class_recall([0, 1], [0, 1], ("a", "b", "c"))
    assert recall.iloc[:2].tolist() == [1.0, 1.0] and np.isnan(recall.iloc[2])


def test_metrics_accept_logits_and_need_a_rule_for_ensembles():
    labels = torch.tensor([0, 1])
    one = torch.tensor([[[2.0, 1.0]], [[0.0, 3.0]]])  # (2, 1, 2)
    assert V.accuracy(one, labels) == 1.0
    assert V.accuracy(one[:, 0], labels) == 1.0  # (N, C) scores
    many = one.repeat(1, 3, 1)
    with pytest.raises(ValueError, match="rule="):
        V.accuracy(many, labels)
    assert V.accuracy(many, labels, rule="t2v") == 1.0
    assert V.accuracy(many, labels, rule=TopTwoVote(1.0, 0.0)) == 1.0
    with pytest.raises(ValueError, match="labels"):
        V.accuracy(many, [0, 1, 1], rule="plurality")


def test_accuracy_table_members_and_rules():
    # member 1 right on all, member 2 right on half, member 3 always wrong
    labels = np.array([0, 1, 0, 1])
    logits = np.zeros((4, 3, 2))
    logits[np.arange(4), 0, labels] = 1
    logits[np.arange(4), 1, [0, 0, 0, 0]] = 1
    logits[np.arange(4), 2, 1 - labels] = 1
    table = V.accuracy_table(logits, labels, rules=("plurality", "softmax_sum"))
    assert table["model"].tolist() == ["member 1", "member 2", "member 3", "plurality",
                                       "softmax_sum"]
    assert table["kind"].tolist() == ["member"] * 3 + ["ensemble"] * 2
    assert table["accuracy"].tolist()[:3] == [1.0, 0.5, 0.0]
    assert table.loc[3, "accuracy"] == 0.5  # members 2 and 3 outvote member 1 on class 1
    with pytest.raises(ValueError, match="member_names"):
        V.accuracy_table(logits, labels, member_names=["a"])


def test_aggregate_folds_matches_table1_format():
    folds = pd.DataFrame({"model": ["single"] * 3 + ["esr"] * 3,
                          "fold": [0, 1, 2] * 2,
                          "accuracy": [0.80, 0.85, 0.90, 0.88, 0.89, 0.90]})
    out = V.aggregate_folds(folds, scale=100, decimals=1)
    assert list(out.index) == ["single", "esr"]
    assert out.loc["single", "mean"] == pytest.approx(85.0)
    assert out.loc["single", "std"] == pytest.approx(5.0)  # sample std, ddof=1
    assert out.loc["esr", "n"] == 3
    assert out.loc["single", "mean ± std"] == "85.0 ± 5.0"
    with pytest.raises(ValueError, match="lacks column"):
        V.aggregate_folds(folds, value="acc")


def test_paired_ttest_hand_computed():
    # differences 1, 2, 3, 4: mean 2.5, sd 1.2910, t = 2.5 / (1.2910 / 2) = 3.8730, df = 3;
    # 95% CI 2.5 +- t(0.975, 3) 3.1824 x 0.6455 = (0.4457, 4.5543)
    a = np.array([2.0, 4.0, 6.0, 8.0])
    b = np.array([1.0, 2.0, 3.0, 4.0])
    r = V.paired_ttest(a, b, unit="seeds")
    assert r.statistic == pytest.approx(3.872983, rel=1e-6)
    assert r.p == pytest.approx(0.030466, rel=1e-4) and r.significant()
    assert r.estimate == pytest.approx(2.5) and r.ci == pytest.approx((0.44573, 4.55427), rel=1e-4)
    assert (r.n, r.unit) == (4, "seeds")
    assert r.describe() == "paired t-test over 4 seeds: +2.5 (95% CI +0.446 to +4.55), p = 0.030"
    with pytest.raises(ValueError, match="equal length"):
        V.paired_ttest([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least two folds"):
        V.paired_ttest([1.0], [2.0])
    with pytest.raises(ValueError, match="finite"):
        V.paired_ttest([1.0, float("nan")], [2.0, 3.0])


def test_paired_ttest_degenerate_cases_are_answered_not_nan():
    same = V.paired_ttest([0.8, 0.9, 0.7], [0.8, 0.9, 0.7])
    assert (same.p, same.estimate, same.ci) == (1.0, 0.0, (0.0, 0.0))
    assert "no difference in any of the 3 folds" in same.note
    shifted = V.paired_ttest([0.8, 0.9, 0.7], [0.7, 0.8, 0.6])  # +0.1 in every fold
    assert shifted.p == pytest.approx(0.25)  # exact sign-flip: 2 / 2^3
    assert shifted.estimate == pytest.approx(0.1) and "same difference" in shifted.note
    assert V.paired_ttest([1.0] * 8, [0.0] * 8).p == pytest.approx(2 / 2**8)


def test_mcnemar_is_an_exact_binomial_test_on_discordant_images():
    # 6 images only a gets right, 1 only b: p = 2 * P(X <= 1 | 7, 1/2) = 2 * 8/128 = 0.125
    a = np.array([1] * 6 + [0] * 1 + [1] * 10 + [0] * 3, dtype=bool)
    b = np.array([0] * 6 + [1] * 1 + [1] * 10 + [0] * 3, dtype=bool)
    r = V.mcnemar(a, b)
    assert r.p == pytest.approx(0.125) and r.n == 20 and r.estimate == pytest.approx(5 / 20)
    assert r.note == "6 images only a gets right, 1 only b"
    half = 1.96 * np.sqrt(7 - 25 / 20) / 20
    assert r.ci == pytest.approx((0.25 - half, 0.25 + half))
    assert V.mcnemar(a, a).p == 1.0  # no discordant image
    with pytest.raises(ValueError, match="same images"):
        V.mcnemar(a, b[:5])


def test_the_clustered_test_treats_the_image_as_the_unit():
    rng = np.random.default_rng(0)
    truth = rng.random(300) < 0.7
    better = np.stack([truth | (rng.random(300) < 0.3) for _ in range(3)])  # (3, 300)
    worse = np.stack([truth & (rng.random(300) < 0.8) for _ in range(2)])   # (2, 300)
    r = V.clustered_test(better, worse)
    assert r.unit == "images" and r.n == 300 and r.p < 0.001
    d = better.mean(0) - worse.mean(0)
    assert r.estimate == pytest.approx(d.mean()) and r.ci[0] < d.mean() < r.ci[1]
    assert r.note == "3 and 2 ensembles on the same images"
    null = V.clustered_test(better, better[::-1])
    assert null.p > 0.2 and V.clustered_test(better, better).p == 1.0
    assert V.clustered_test(better, worse).p == r.p  # seeded: the same answer every time
    with pytest.raises(ValueError, match="same images"):
        V.clustered_test(better, worse[:, :10])


def test_a_rank_correlation_needs_enough_distinct_points():
    r = V.rank_correlation([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5])
    assert r.estimate == pytest.approx(0.8286, rel=1e-3) and r.unit == "points"
    with pytest.raises(ValueError, match="at least 5 distinct points, got 3"):
        V.rank_correlation([1, 2, 3], [3, 2, 1])
    with pytest.raises(ValueError, match="got 2"):
        V.rank_correlation([1, 1, 1, 2, 2, 2], [1, 2, 3, 4, 5, 6])


def test_ttest_table_layout_like_esr_table2():
    rng = np.random.default_rng(0)
    base = rng.normal(0.85, 0.03, 10)
    scores = {"Single": base, "TE": base + 0.04 + rng.normal(0, 0.01, 10),
              "Lvl. 3": base + 0.04 + rng.normal(0, 0.01, 10)}
    table = V.ttest_table(scores)
    assert list(table.index) == ["Single", "TE"] and list(table.columns) == ["TE", "Lvl. 3"]
    assert np.isnan(table.loc["TE", "TE"])
    assert table.loc["Single", "TE"] < 0.05 < table.loc["TE", "Lvl. 3"]
    assert table.loc["Single", "Lvl. 3"] == V.paired_ttest(scores["Single"], scores["Lvl. 3"]).p


def test_rmse_per_dimension_and_member_mean():
    target = np.array([[0.0, 0.0], [0.0, 0.0]])
    pred = np.array([[0.3, 0.4], [-0.3, 0.0]])
    r = V.rmse(pred, target)
    assert r["valence"] == pytest.approx(0.3)
    assert r["arousal"] == pytest.approx(np.sqrt(0.08))
    members = np.stack([pred + 0.1, pred - 0.1], axis=1)  # (N, 2 members, 2)
    assert V.rmse(members, target) == pytest.approx(r)
    with pytest.raises(ValueError, match="match"):
        V.rmse(pred[:, :1], target)


def test_top_confusions_lists_the_largest_off_diagonal_shares():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 2, 1, 1, 0, 2])
    logits = np.eye(3)[preds][:, None, :]
    top = V.top_confusions(logits, labels, ("a", "b", "c"), k=2)
    assert list(top.index) == [("a", "b"), ("c", "a")]
    assert top.tolist() == [0.5, 0.5]


def test_predict_calls_the_named_output():
    class Two(nn.Module):
        def forward(self, x):
            return x.new_zeros(len(x), 2, 3)

        def forward_affect(self, x):
            return x.new_ones(len(x), 2, 2)
    x = torch.rand(5, 1, 4, 4)
    assert V.predict(Two(), x, device="cpu", output="forward_affect").shape == (5, 2, 2)
    with pytest.raises(ValueError, match="no method"):
        V.predict(Two(), x, device="cpu", output="nope")
