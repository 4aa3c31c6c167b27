"""Decision rules, diversity measures and kernel fusion, checked against the papers' examples."""
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from fernb import ensemble as E
from fernb.studies import faml

# Zhou et al., Table 3: six R18+FAML networks on one "Anger" RAF-DB image, classes in the
# paper's order AN, DI, FE, HA, NE, SA, SU (the outputs as the chapter holds them).
TABLE3_LOGITS = torch.from_numpy(faml.TABLE3_LOGITS).unsqueeze(0)  # (1, 6, 7), float64
RAF_CLASSES, TABLE3_CLASS_COLUMN = faml.TABLE3_CLASSES, faml.TABLE3_CLASS_COLUMN
TABLE3_T2V = [8.7, 0, 0, 7.7, 0, 1, 0]


def test_t2v_reproduces_zhou_table3():
    rule = E.TopTwoVote(alpha=1.9, beta=1.0)
    assert rule.scores(TABLE3_LOGITS)[0].tolist() == TABLE3_T2V  # exactly, not approximately
    assert rule.scores(TABLE3_LOGITS.float())[0].tolist() == TABLE3_T2V
    assert RAF_CLASSES[int(rule(TABLE3_LOGITS))] == "AN"
    # AN: 3 firsts (networks 4-6) + 3 seconds (1-3); HA: 3 firsts + 2 seconds; SA: 1 second
    assert E.top_two_counts(TABLE3_LOGITS)[0].tolist() == [[3, 0, 0, 3, 0, 0, 0],
                                                          [3, 0, 0, 2, 0, 1, 0]]
    assert rule.counts(TABLE3_LOGITS)[0].tolist() == [87, 0, 0, 77, 0, 10, 0]


def test_t2v_equal_counts_tie_to_lowest_class_whatever_the_member_order():
    # Members 1-3 rank class 0 first and class 1 second, members 4-6 the other way round:
    # both classes get 3 x 1.9 + 3 x 1.0 = 8.7. Summed member by member, class 0's votes
    # give 1.9 + 1.9 + 1.9 + 1.0 + 1.0 + 1.0 = 8.7 but class 1's give
    # 1.0 + 1.0 + 1.0 + 1.9 + 1.9 + 1.9 = 8.700000000000001, which handed the tie to class 1.
    rows = [[2.0, 1.0, 0.0]] * 3 + [[1.0, 2.0, 0.0]] * 3
    orders = torch.tensor(list(itertools.permutations(range(6))))  # all 720 member orders
    logits = torch.tensor(rows, dtype=torch.float64)[orders]  # (720, 6, 3)
    rule = E.TopTwoVote()
    scores = rule.scores(logits)
    assert (scores[:, :2] == 8.7).all() and (scores[:, 2] == 0).all()
    assert (rule(logits) == 0).all()
    assert (rule(logits.float()) == 0).all()


def test_t2v_weights_are_exact_fractions():
    # 0.1 + 0.2 != 0.3 in floats; as fractions 1/10 + 2/10 = 3/10 exactly.
    logits = torch.tensor([[[3.0, 2.0, 1.0, 0.0], [0.0, 3.0, 2.0, 1.0], [2.0, 0.0, 3.0, 1.0],
                            [2.0, 0.0, 1.0, 3.0]]])
    # class 0: firsts 1, seconds 2; class 2: firsts 1, seconds 1; class 3: firsts 1
    rule = E.TopTwoVote(alpha=0.3, beta=0.15000000000000002)
    assert rule.counts(logits)[0].tolist() == [12, 9, 9, 6]  # over the denominator 20
    assert rule.scores(logits)[0, 1] == rule.scores(logits)[0, 2]
    assert int(rule(logits)) == 0


def test_t2v_eq11_matches_table3():
    out = E.t2v_votes_eq11(TABLE3_LOGITS, 1.9, 1.0).sum(dim=1)  # eq. 12
    assert out[0].tolist() == pytest.approx(TABLE3_T2V)


def test_table3_class_column_disagrees_with_the_stated_class_order():
    # Networks 1-3 put their maximum at index 3, which is HA in the order the paper states
    # (Sec. 4.1); Table 3's Class column prints FE for them. Networks 4-6 agree (AN).
    argmax = [RAF_CLASSES[i] for i in TABLE3_LOGITS[0].argmax(dim=1).tolist()]
    assert argmax == ["HA", "HA", "HA", "AN", "AN", "AN"]
    assert argmax[3:] == list(TABLE3_CLASS_COLUMN[3:])
    assert argmax[:3] != list(TABLE3_CLASS_COLUMN[:3])


def test_table3_other_rules_choose_happiness():
    # The example's point: averaging rules follow the three confident HA networks, T2V does not.
    for name in ("score_average", "softmax_sum", "majority"):
        assert int(E.RULES[name](TABLE3_LOGITS)) == 3, name
    # The plurality vote is a 3-3 tie, resolved to the lowest index (AN).
    assert E.RULES["plurality"].scores(TABLE3_LOGITS)[0].tolist() == [3, 0, 0, 3, 0, 0, 0]
    assert int(E.RULES["plurality"](TABLE3_LOGITS)) == 0


@pytest.mark.parametrize("alpha,beta", [(1.9, 1.0), (1.0, 0.0), (3.0, 2.5), (0.5, 1.0)])
def test_t2v_eq10_equals_eq11(alpha, beta):
    logits = torch.randn(64, 5, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(E.t2v_votes(logits, alpha, beta), E.t2v_votes_eq11(logits, alpha, beta))


def test_t2v_eq10_equals_eq11_with_ties():
    logits = torch.tensor([[[1.0, 1.0, 1.0, 0.0], [2.0, 0.0, 2.0, 2.0]]])
    assert torch.equal(E.t2v_votes(logits), E.t2v_votes_eq11(logits))
    expected = torch.tensor([[1.9, 1.0, 0, 0], [1.9, 0, 1.0, 0]])  # ties: lower index first
    assert torch.allclose(E.t2v_votes(logits)[0], expected)


def test_eq11_needs_ascending_ranks():
    # Read literally with eq. 10's descending ranks (0 = top), eq. 11 gives alpha and beta to
    # the two *lowest* classes: it only reproduces eq. 10 with ascending ranks.
    z = E.as_logits(torch.randn(4, 3, 7, generator=torch.Generator().manual_seed(1)))
    s = E.descending_ranks(z).float()
    literal = (1.9 - 2 * 1.0) * (s + 2 - 7).clamp(min=0) + 1.0 * (s + 3 - 7).clamp(min=0)
    assert not torch.allclose(literal, E.t2v_votes(z))
    assert torch.allclose(literal, E.t2v_votes(-z))


def test_t2v_alpha1_beta0_is_plurality_vote():
    logits = torch.randn(50, 4, 6, generator=torch.Generator().manual_seed(2))
    assert torch.equal(E.TopTwoVote(1.0, 0.0)(logits), E.PluralityVote()(logits))


def test_t2v_two_seconds_beat_one_first():
    # alpha = 1.9 < 2 beta: two second places outvote one first place (Zhou Sec. 4.1).
    logits = torch.tensor([[[5.0, 0.0, 4.0], [0.0, 5.0, 4.0], [3.0, 0.0, 2.0]]])
    # first/second places: member 1 -> 0, 2; member 2 -> 1, 2; member 3 -> 0, 2
    assert E.TopTwoVote().scores(logits)[0].tolist() == pytest.approx([3.8, 1.9, 3.0])
    assert int(E.TopTwoVote()(logits)) == 0
    logits = torch.tensor([[[5.0, 0.0, 4.0], [0.0, 5.0, 4.0]]])
    assert int(E.TopTwoVote()(logits)) == 2  # 1.0 + 1.0 > 1.9


def test_plurality_ties_go_to_lowest_index():
    logits = torch.tensor([[[0.0, 0.0, 9.0], [0.0, 9.0, 0.0]],
                           [[9.0, 0.0, 0.0], [0.0, 0.0, 9.0]]])
    assert E.PluralityVote()(logits).tolist() == [1, 0]


def test_majority_vote_and_fallbacks():
    logits = torch.tensor([
        [[9.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 0.0, 1.0]],  # 2 of 3 votes: majority 0
        [[0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 0.0]],  # no majority
    ])
    assert E.MajorityVote()(logits).tolist() == [0, 1]  # softmax sum picks 1
    assert E.MajorityVote(fallback=None)(logits).tolist() == [0, -1]
    assert E.MajorityVote(fallback="plurality")(logits).tolist() == [0, 0]  # 1-1-1 tie
    even = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 5.0]]])
    assert E.MajorityVote(fallback=None)(even).tolist() == [-1]  # 2 of 4 is not > M/2


def test_score_average_is_gan_eq7_and_differs_from_softmax_sum():
    logits = torch.tensor([[[10.0, 0.0], [0.0, 3.0], [0.0, 3.0]]])
    assert E.ScoreAverage().scores(logits)[0].tolist() == pytest.approx([10 / 3, 2.0])
    assert int(E.ScoreAverage()(logits)) == 0
    # softmax sum: class 0 gets 1.000 + 2 * 0.047, class 1 gets 0.000 + 2 * 0.953
    assert E.SoftmaxSum().scores(logits)[0].tolist() == pytest.approx([1.095, 1.905], abs=1e-3)
    assert int(E.SoftmaxSum()(logits)) == 1


def test_softmax_sum_is_eq13_and_weights():
    logits = torch.randn(10, 3, 4, generator=torch.Generator().manual_seed(3))
    expected = sum(torch.softmax(logits[:, m], dim=1) for m in range(3))
    assert torch.allclose(E.SoftmaxSum().scores(logits), expected)
    only_second = E.SoftmaxSum(weights=[0, 1, 0])(logits)
    assert torch.equal(only_second, logits[:, 1].argmax(dim=1))
    with pytest.raises(ValueError, match="one value per member"):
        E.SoftmaxSum(weights=[1, 1])(logits)
    with pytest.raises(ValueError, match="non-negative"):
        E.SoftmaxSum(weights=[1, -1, 1])(logits)


@pytest.mark.parametrize("name", sorted(E.RULES))
def test_single_member_rules_are_argmax(name):
    logits = torch.randn(20, 1, 5, generator=torch.Generator().manual_seed(4))
    pred = E.RULES[name](logits)
    assert pred.shape == (20,)
    assert torch.equal(pred, logits[:, 0].argmax(dim=1))
    assert E.RULES[name].scores(logits).shape == (20, 5)


@pytest.mark.parametrize("name", sorted(E.RULES))
def test_rules_accept_numpy(name):
    logits = np.random.default_rng(5).normal(size=(6, 3, 4)).astype(np.float32)
    assert torch.equal(E.RULES[name](logits), E.RULES[name](torch.from_numpy(logits)))


def test_bad_shapes_and_names():
    with pytest.raises(ValueError, match=r"unsqueeze\(1\)"):
        E.RULES["plurality"](torch.zeros(4, 7))
    with pytest.raises(TypeError):
        E.RULES["plurality"]([[[0.0]]])
    with pytest.raises(ValueError, match="at least 2 classes"):
        E.TopTwoVote()(torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match="alpha > 0"):
        E.TopTwoVote(alpha=0.0)(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="beta >= 0"):
        E.TopTwoVote(beta=float("nan"))(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="unknown decision rule"):
        E.get_rule("average")


def test_pairwise_diversity_hand_computed():
    labels = np.zeros(4, dtype=int)
    preds = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 0]])  # (N=4, M=3)
    # member correctness: a = [1,1,0,0], b = [1,0,1,0], c = [0,0,0,1]
    table = E.pairwise_diversity(preds, labels)
    ab = table.iloc[0]
    # a, b: N11 = 1, N10 = 1, N01 = 1, N00 = 1
    assert ab[["member_a", "member_b"]].tolist() == [0, 1]
    assert ab["disagreement"] == 0.5 and ab["double_fault"] == 0.25 and ab["q_statistic"] == 0.0
    ac = table.iloc[1]
    # a, c: N11 = 0, N10 = 2, N01 = 1, N00 = 1 -> Q = (0 - 2) / (0 + 2) = -1
    assert (ac["disagreement"], ac["double_fault"], ac["q_statistic"]) == (0.75, 0.25, -1.0)
    summary = E.diversity(preds, labels)
    assert summary["oracle_accuracy"] == 1.0
    assert summary["disagreement"] == pytest.approx(table["disagreement"].mean())


def test_diversity_of_identical_members():
    labels = np.array([0, 1, 2, 0])
    logits = np.tile(np.eye(3)[[0, 1, 1, 0]][:, None, :], (1, 3, 1))  # 3 identical members
    d = E.diversity(logits, labels)
    assert d["disagreement"] == 0.0
    assert d["double_fault"] == 0.25
    assert d["q_statistic"] == 1.0
    assert d["oracle_accuracy"] == 0.75


def test_q_statistic_undefined_when_always_right():
    labels = np.array([0, 1])
    preds = np.array([[0, 0], [1, 1]])
    assert np.isnan(E.diversity(preds, labels)["q_statistic"])
    with pytest.raises(ValueError, match="at least 2 members"):
        E.pairwise_diversity(preds[:, :1], labels)


def test_fused_kernels_equal_averaged_feature_maps():
    # Zhou eq. 8 -> eq. 9: on a shared input, the convolution with averaged kernels equals the
    # average of the convolutions (distributive law).
    torch.manual_seed(0)
    convs = [nn.Conv2d(3, 4, 3) for _ in range(3)]
    fused = nn.Conv2d(3, 4, 3)
    fused.load_state_dict(E.fuse_state_dicts([c.state_dict() for c in convs]))
    x = torch.randn(2, 3, 8, 8)
    expected = torch.stack([c(x) for c in convs]).mean(dim=0)
    assert torch.allclose(fused(x), expected, atol=1e-6)


def test_fuse_state_dicts_weights_and_buffers():
    nets = [nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)) for _ in range(2)]
    nets[1][1].num_batches_tracked += 7
    sds = [n.state_dict() for n in nets]
    first = E.fuse_state_dicts(sds, weights=[3.0, 0.0])
    assert all(torch.equal(first[k], sds[0][k]) for k in sds[0])
    half = E.fuse_state_dicts(sds, weights=[1.0, 1.0])
    assert torch.allclose(half["0.weight"], (sds[0]["0.weight"] + sds[1]["0.weight"]) / 2)
    assert half["1.num_batches_tracked"].item() == 0
    with pytest.raises(ValueError, match="does not match"):
        E.fuse_state_dicts([sds[0], nn.Linear(2, 3).state_dict()])
    with pytest.raises(ValueError, match="sum to 0"):
        E.fuse_state_dicts(sds, weights=[0.0, 0.0])


def test_label_rank_distribution_hand_computed():
    # 2 members, 3 classes, 4 samples with labels 0, 1, 2, 0
    logits = torch.tensor([
        [[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]],  # label 0: member 1 rank 1, member 2 rank 3
        [[3.0, 2.0, 1.0], [2.0, 3.0, 1.0]],  # label 1: ranks 2, 1
        [[3.0, 2.0, 1.0], [1.0, 3.0, 2.0]],  # label 2: ranks 3, 2
        [[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]],  # label 0: ranks 1 (tie, lower index), 3
    ])
    table = E.label_rank_distribution(logits, [0, 1, 2, 0])
    assert table.index.tolist() == [1, 2] and table.columns.tolist() == [1, 2, 3]
    assert table.loc[1].tolist() == [0.5, 0.25, 0.25]
    assert table.loc[2].tolist() == [0.25, 0.25, 0.5]
    with pytest.raises(ValueError, match="labels"):
        E.label_rank_distribution(logits, [0, 1])
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        E.label_rank_distribution(logits, [0, 1, 3, 0])


def test_label_rank_distribution_first_column_is_accuracy():
    logits = torch.randn(40, 3, 5, generator=torch.Generator().manual_seed(6))
    labels = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(7))
    table = E.label_rank_distribution(logits, labels)
    np.testing.assert_allclose(table.sum(axis=1), 1.0)
    acc = (logits.argmax(dim=2) == labels[:, None]).double().mean(dim=0)
    np.testing.assert_allclose(table[1].to_numpy(), acc.numpy())


def test_zhou_rules_are_table6_columns():
    assert isinstance(E.ZHOU_RULES["T2V"], E.TopTwoVote)
    assert (E.ZHOU_RULES["T2V"].alpha, E.ZHOU_RULES["T2V"].beta) == (1.9, 1.0)
    assert isinstance(E.ZHOU_RULES["T1V"], E.PluralityVote)
    assert isinstance(E.ZHOU_RULES["NOI"], E.SoftmaxSum)


@pytest.mark.parametrize("alpha,beta,members,expected", [
    (1.0, 0.0, 6, "T1V (plurality vote)"),
    (1.0, 0.15, 6, "T1V, ties broken by second places"),  # 6 x 0.15 < 1
    (1.0, 0.4, 6, "a first place outweighs two second places"),
    (1.9, 1.0, 6, "two second places outweigh a first place"),  # the paper's weights
    (1.0, 1.0, 6, "top-two plurality (first = second)"),
    (1.0, 2.0, 6, "second places outweigh first places"),
])
def test_t2v_regime(alpha, beta, members, expected):
    assert E.t2v_regime(alpha, beta, members) == expected


def test_t2v_sweep_limits():
    logits = torch.randn(200, 5, 6, generator=torch.Generator().manual_seed(8))
    labels = torch.randint(0, 6, (200,), generator=torch.Generator().manual_seed(9))
    table = E.t2v_sweep(logits, labels, ratios=[0.0, 0.1, 1 / 1.9])
    t1v_acc = float((E.PluralityVote()(logits) == labels).double().mean())
    assert table.attrs["T1V"] == t1v_acc
    first = table.iloc[0]
    assert first["agree_t1v"] == 1.0 and first["accuracy"] == t1v_acc
    # 5 members x 0.1 < 1: T1V where T1V has no tie, seconds only break its ties
    t1v_scores = E.PluralityVote().scores(logits)
    top2 = t1v_scores.topk(2, dim=1).values
    untied = top2[:, 0] > top2[:, 1]
    pred = E.TopTwoVote(1.0, 0.1)(logits)
    assert torch.equal(pred[untied], E.PluralityVote()(logits)[untied])
    paper = E.TopTwoVote(1.9, 1.0)(logits)
    assert table.iloc[2]["accuracy"] == float((paper == labels).double().mean())
    with pytest.raises(ValueError, match="ratios"):
        E.t2v_sweep(logits, labels, ratios=[-1.0])


def test_disagreement_per_sample_by_hand_and_its_mean_is_the_pairwise_disagreement():
    # Three members on four samples (labels 0): right/wrong patterns 111, 110, 100, 000.
    preds = np.array([[0, 0, 0], [0, 0, 1], [0, 2, 1], [1, 1, 2]])
    labels = np.zeros(4, dtype=int)
    # Pairs with exactly one member right: 0 of 3, 2 of 3, 2 of 3, 0 of 3.
    np.testing.assert_allclose(E.disagreement_per_sample(preds, labels), [0, 2 / 3, 2 / 3, 0])
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4, 5))
    y = rng.integers(0, 5, 50)
    assert E.disagreement_per_sample(logits, y).mean() == pytest.approx(
        E.diversity(logits, y)["disagreement"])
    with pytest.raises(ValueError, match="at least 2 members"):
        E.disagreement_per_sample(logits[:, :1], y)


def test_tied_top_and_random_tie_accuracy_hand_computed():
    # Image 0: T1V tied 3 : 3 between classes 0 and 3 (Table 3); image 1: a clear winner;
    # image 2: three classes tied.
    scores = torch.tensor([[3.0, 0, 0, 3, 0, 0, 0], [1, 4, 1, 0, 0, 0, 0],
                           [2, 2, 2, 0, 0, 0, 0]])
    top = E.tied_top(scores)
    assert top.sum(1).tolist() == [2, 1, 3]
    labels = [3, 1, 0]
    # Lowest index: image 0 goes to class 0 (wrong), image 2 to class 0 (right): 2 of 3.
    assert (scores.argmax(1).numpy() == labels).mean() == pytest.approx(2 / 3)
    # At random: 1/2 + 1 + 1/3 over 3 images.
    assert E.random_tie_accuracy(scores, labels) == pytest.approx((0.5 + 1 + 1 / 3) / 3)
    t1v = E.PluralityVote().scores(TABLE3_LOGITS)
    assert E.random_tie_accuracy(t1v, [0]) == pytest.approx(0.5)  # AN or HA, label AN
    with pytest.raises(ValueError, match="labels"):
        E.random_tie_accuracy(scores, [0, 1])
