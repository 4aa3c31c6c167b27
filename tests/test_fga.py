"""Zhou, Xie & Tian: two learning-rate phases (Sec. 3.1) and FGA (Algorithm 1, eq. 9)."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fernb import fga as G
from fernb.losses import MultiLoss
from fernb.models.faml import r18_faml
from fernb.seeding import seeded
from fernb.train import FitConfig, Schedule, adam, fit


class Tiny(nn.Module):
    """conv -> BN -> pool -> linear, logits (B, 1, C)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3))).unsqueeze(1)


def _tiny(seed: int = 0) -> Tiny:
    with seeded(seed, 0):
        return Tiny()


def _data(n: int = 24, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, 6, 6, generator=g) + y.view(-1, 1, 1, 1).float()
    return TensorDataset(x, y)


FIT = FitConfig(epochs=1, optimizer=adam(3e-4), batch_size=8, device="cpu")


def test_paper_settings():
    raf, aff = G.PAPER["raf-db"], G.PAPER["affectnet"]
    assert (raf.batch_size, raf.p_lsr, raf.class_weighted) == (128, 0.8, False)
    assert (aff.batch_size, aff.p_lsr, aff.class_weighted) == (256, 0.2, True)
    for s in (raf, aff):
        assert (s.epsilon, s.alpha, s.beta, s.optimizer) == (0.1, 1.9, 1.0, "adam")
        assert (s.phases.lr1, s.phases.lr2) == (3e-4, 1e-5)
        assert (s.image_size, s.flip, s.n_networks) == (224, 0.5, 6)
        assert s.generations is None and s.epochs is None  # not in the paper


def test_selection_probabilities_hand_computed():
    # inverse: fitness 1/L = (2, 1, 0.5), total 3.5 -> (4/7, 2/7, 1/7)
    p = G.selection_probabilities([0.5, 1.0, 2.0])
    np.testing.assert_allclose(p, [4 / 7, 2 / 7, 1 / 7])
    # softmax, T = 1: exp(-0.5) = 0.60653, exp(-1) = 0.36788, exp(-2) = 0.13534, sum 1.10975
    p = G.selection_probabilities([0.5, 1.0, 2.0], selection="softmax")
    np.testing.assert_allclose(p, [0.54655, 0.33150, 0.12196], atol=1e-5)
    # T = 0.5 doubles the exponents: exp(-1), exp(-2), exp(-4) over their sum
    p = G.selection_probabilities([0.5, 1.0, 2.0], selection="softmax", temperature=0.5)
    e = [math.exp(-1), math.exp(-2), math.exp(-4)]
    np.testing.assert_allclose(p, [v / sum(e) for v in e])
    with pytest.raises(ValueError, match="positive losses"):
        G.selection_probabilities([0.0, 1.0])
    with pytest.raises(ValueError, match="selection"):
        G.selection_probabilities([1.0], selection="rank")
    with pytest.raises(ValueError, match="finite"):
        G.selection_probabilities([1.0, float("nan")])


def test_fused_kernel_is_the_mean_of_its_parents():
    parents = [_tiny(s) for s in range(3)]
    for value, net in zip((1.0, 2.0, 6.0), parents):
        with torch.no_grad():
            net.conv.weight.fill_(value)
    fused = G.fuse_kernels(parents, main=1)
    assert torch.equal(fused["conv.weight"], torch.full((4, 1, 3, 3), 3.0))  # (1 + 2 + 6) / 3
    mean_bias = (parents[0].conv.bias + parents[1].conv.bias + parents[2].conv.bias) / 3
    assert torch.allclose(fused["conv.bias"], mean_bias)
    # BatchNorm and the classifier come from the main parent
    for key in ("fc.weight", "fc.bias", "bn.weight", "bn.running_var"):
        assert torch.equal(fused[key], parents[1].state_dict()[key])
    everything = G.fuse_kernels(parents, main=1, fuse="all")
    assert torch.allclose(everything["fc.weight"],
                          sum(p.fc.weight for p in parents) / 3)
    with pytest.raises(ValueError, match="fuse"):
        G.fuse_kernels(parents, fuse="bn")
    with pytest.raises(ValueError, match="main"):
        G.fuse_kernels(parents, main=3)


def test_fused_faml_averages_every_convolution_only():
    nets = []
    for k in range(2):
        with seeded(1, k):
            nets.append(r18_faml(n_classes=3, width=0.125))
    fused = G.fuse_kernels(nets, main=0)
    sds = [n.state_dict() for n in nets]
    for key in ("net.conv1.main.weight", "net.conv1.area_convs.eyes.weight",
                "net.layer2.0.downsample.0.weight", "net.layer4.1.conv2.weight"):
        assert torch.allclose(fused[key], (sds[0][key] + sds[1][key]) / 2), key
    for key in ("attention.0.encoder.self_attn.in_proj_weight", "net.fc.weight",
                "net.conv1.area_weights", "net.bn1.weight"):
        assert torch.equal(fused[key], sds[0][key]), key


class Recorder:
    """A ``train`` that records each child's state and returns a fixed loss per name."""

    def __init__(self, losses: dict[str, float] | None = None) -> None:
        self.states, self.losses = {}, losses or {}

    def __call__(self, model: nn.Module, name: str) -> float:
        self.states[name] = {k: v.clone() for k, v in model.state_dict().items()}
        return self.losses.get(name, 1.0)


def test_fga_one_generation():
    population = [_tiny(s) for s in range(4)]
    before = [{k: v.clone() for k, v in n.state_dict().items()} for n in population]
    losses = [0.5, 1.0, 2.0, 4.0]
    train = Recorder()
    result = G.fga(population, losses, builder=Tiny, train=train, seed=7)
    assert len(result.networks) == 4 and result.losses == [1.0] * 4
    np.testing.assert_allclose(result.probabilities[0], [8 / 15, 4 / 15, 2 / 15, 1 / 15])
    table = result.lineage
    assert table["kind"].tolist() == ["input"] * 4 + ["fused", "fused", "new", "new"]
    assert table["name"].tolist()[4:] == ["g1_fused1", "g1_fused2", "g1_new1", "g1_new2"]
    assert list(train.states) == table["name"].tolist()[4:]  # every child was trained
    for _, row in table[table.kind == "fused"].iterrows():
        parents = row["parents"]
        assert len(parents) == 2 and parents[0] < parents[1]
        state = train.states[row["name"]]
        mean = sum(population[j].conv.weight for j in parents) / 2
        assert torch.allclose(state["conv.weight"], mean)
        main = min(parents, key=lambda j: losses[j])  # lowest training loss
        assert torch.equal(state["fc.weight"], population[main].fc.weight)
    for k in (1, 2):
        with seeded(7, "fga", 1, k):
            expected = Tiny()
        assert torch.equal(train.states[f"g1_new{k}"]["conv.weight"], expected.conv.weight)
    assert not torch.equal(train.states["g1_new1"]["conv.weight"],
                           train.states["g1_new2"]["conv.weight"])
    for net, state in zip(population, before):  # the input is left unchanged
        assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    again = G.fga(population, losses, builder=Tiny, train=Recorder(), seed=7)
    pd.testing.assert_frame_equal(again.lineage, table)


def test_fga_selects_by_loss_and_chains_generations():
    population = [_tiny(s) for s in range(4)]
    # networks 0 and 1 have P ~ 0.5 each, networks 2 and 3 ~ 5e-7
    train = Recorder({"g1_fused1": 0.1, "g1_fused2": 0.1, "g1_new1": 9.0, "g1_new2": 9.0,
                      "g1_fused3": 0.1})
    result = G.fga(population, [1e-3, 1e-3, 1e3, 1e3], builder=Tiny, train=train,
                   generations=2, n_fused=3, n_new=2, seed=0)
    table = result.lineage
    assert (table.loc[table.generation == 1, "parents"].iloc[:3] == (0, 1)).all()
    assert len(result.networks) == 5
    # generation 2 draws from generation 1's children by the losses ``train`` returned
    np.testing.assert_allclose(result.probabilities[1],
                               G.selection_probabilities([0.1, 0.1, 0.1, 9.0, 9.0]))
    assert table.loc[table.generation == 2, "kind"].tolist() == ["fused"] * 3 + ["new"] * 2


def test_shared_start_differs_only_in_the_classifier():
    with seeded(2, 0):
        common = r18_faml(n_classes=3, width=0.125).state_dict()
    build = G.shared_start(lambda: r18_faml(n_classes=3, width=0.125), common)
    nets = []
    for k in (1, 2):
        with seeded(2, k):
            nets.append(build())
    for key, value in common.items():
        same = key in ("net.fc.weight", "net.fc.bias")
        for net in nets:
            assert torch.equal(net.state_dict()[key], value) != same, key
    assert not torch.equal(nets[0].net.fc.weight, nets[1].net.fc.weight)
    with seeded(2, 1):
        plain = r18_faml(n_classes=3, width=0.125)
    assert torch.equal(nets[0].net.fc.weight, plain.net.fc.weight)  # its own seeded draw
    with pytest.raises(ValueError, match="fc.kernel"):
        G.shared_start(Tiny, _tiny().state_dict(), own=["fc.kernel"])()


def test_fga_bad_arguments():
    nets = [_tiny(s) for s in range(3)]
    with pytest.raises(ValueError, match="losses"):
        G.fga(nets, [1.0, 1.0], builder=Tiny, train=Recorder())
    with pytest.raises(ValueError, match="n_parents"):
        G.fga(nets, [1.0] * 3, builder=Tiny, train=Recorder(), n_parents=4)
    with pytest.raises(ValueError, match="n_fused"):
        G.fga(nets, [1.0] * 3, builder=Tiny, train=Recorder(), n_fused=0)
    with pytest.raises(ValueError, match="generations"):
        G.fga(nets, [1.0] * 3, builder=Tiny, train=Recorder(), generations=0)


def test_is_stable_hand_computed():
    frame = pd.DataFrame({"train_loss": [2.0, 1.0, 0.52, 0.50, 0.49],
                          "train_acc_ens": [0.3, 0.6, 0.800, 0.805, 0.809]})
    # last 3: loss range 0.03, accuracy range 0.009
    assert G.is_stable(frame, window=3, loss_tol=0.05, acc_tol=0.01)
    assert not G.is_stable(frame, window=3, loss_tol=0.02, acc_tol=0.01)
    assert not G.is_stable(frame, window=3, loss_tol=0.05, acc_tol=0.005)
    assert not G.is_stable(frame, window=4, loss_tol=0.05, acc_tol=0.01)  # 1.0 .. 0.49
    assert not G.is_stable(frame.iloc[:2], window=3, loss_tol=9.0, acc_tol=9.0)


def test_two_phase_switches_when_stable(tmp_path):
    phases = G.TwoPhase(max_epochs1=4, epochs2=2, window=2, loss_tol=math.inf,
                        acc_tol=math.inf)
    result = G.train_two_phase(_tiny(), _data(), None, FIT, phases=phases, checkpoint=tmp_path)
    assert result.stable and result.switch_epoch == 2
    frame = result.to_frame()
    assert frame["phase"].tolist() == [1, 1, 2, 2] and frame.index.tolist() == [1, 2, 3, 4]
    # cosine over 4 epochs: after epoch 1 the lr is 3e-4 (1 + cos(pi / 4)) / 2
    assert frame["lr"].iloc[0] == pytest.approx(3e-4 * (1 + math.cos(math.pi / 4)) / 2)
    assert frame["lr"].iloc[2:].tolist() == pytest.approx([1e-5, 1e-5])  # StepLR, step 5
    assert result.training_loss == pytest.approx(frame["train_loss"].iloc[2:].mean())
    assert (tmp_path / "phase1" / "last.pt").exists() and (tmp_path / "phase2" / "last.pt").exists()


def test_two_phase_runs_max_epochs_and_equals_one_fit(tmp_path):
    phases = G.TwoPhase(max_epochs1=3, epochs2=1, loss_tol=0.0, acc_tol=0.0)
    model = _tiny()
    result = G.train_two_phase(model, _data(), None, FIT.replace(loss=MultiLoss(p_lsr=0.5)),
                               phases=phases)
    assert not result.stable and result.switch_epoch == 3
    # phase 1, one fit call per epoch, is the same run as one fit call of 3 epochs
    reference = _tiny()
    history = fit(reference, _data(), None, FIT.replace(
        epochs=3, schedule=Schedule("CosineAnnealingLR", T_max=3), loss=MultiLoss(p_lsr=0.5)))
    assert result.phase1.to_frame()["train_loss"].tolist() == \
        history.to_frame()["train_loss"].tolist()


def test_multi_loss_draws_do_not_depend_on_validation():
    data = _data()
    runs = []
    for val in (None, _data(9, seed=1)):
        loss = MultiLoss(p_lsr=0.5)
        history = fit(_tiny(), data, val, FIT.replace(epochs=2, optimizer=adam(1e-2),
                                                      loss=loss))
        runs.append((history.to_frame()["train_loss"].tolist(), dict(loss.counts)))
    assert runs[0] == runs[1]
    assert sum(runs[0][1].values()) == 6  # 3 batches x 2 epochs


def test_two_phase_settings_are_checked():
    with pytest.raises(ValueError, match="max_epochs1"):
        G.TwoPhase(max_epochs1=0)
    with pytest.raises(ValueError, match="gamma"):
        G.TwoPhase(gamma=0.0)


def test_fga_with_two_phase_training(tmp_path):
    phases = G.TwoPhase(max_epochs1=1, epochs2=1, window=1)
    trainer = G.TwoPhaseTrainer(_data(), None, FIT, phases=phases, checkpoint=tmp_path)
    population = [_tiny(s) for s in range(2)]
    losses = [trainer(net, f"input{k}") for k, net in enumerate(population)]
    result = G.fga(population, losses, builder=Tiny, train=trainer, n_fused=1, n_new=1)
    assert result.lineage["name"].tolist()[2:] == ["g1_fused1", "g1_new1"]
    assert result.losses == [trainer.results[n].training_loss for n in ("g1_fused1", "g1_new1")]
    assert (tmp_path / "g1_fused1" / "phase2" / "last.pt").exists()


def test_trainer_gives_every_network_its_own_training_randomness():
    phases = G.TwoPhase(max_epochs1=1, epochs2=1, window=1)
    trainer = G.TwoPhaseTrainer(_data(), None, FIT.replace(loss=MultiLoss(p_lsr=0.5)),
                                phases=phases)
    a, b = _tiny(), _tiny()  # the same start, e.g. two children of the same parents
    trainer(a, "g1_fused1")
    trainer(b, "g1_fused2")
    assert not torch.equal(a.conv.weight, b.conv.weight)
    c = _tiny()
    G.TwoPhaseTrainer(_data(), None, FIT.replace(loss=MultiLoss(p_lsr=0.5)), phases=phases)(
        c, "g1_fused1")
    assert torch.equal(a.conv.weight, c.conv.weight)  # reproducible per name


def test_draw_parents_is_a_prefix_and_names_the_lowest_loss_main_parent():
    losses = [0.5, 1.0, 2.0, 4.0]
    draws = G.draw_parents(losses, 5, seed=3)
    # Child i's parents do not depend on how many children follow it.
    assert G.draw_parents(losses, 2, seed=3) == draws[:2]
    assert G.draw_parents(losses, 5, seed=4) != draws
    for draw in draws:
        assert len(draw.parents) == 2 and draw.parents[0] < draw.parents[1]
        assert draw.main_parent == min(draw.parents, key=lambda j: losses[j])
    # Two networks hold nearly all the probability: every child has them as parents.
    extreme = G.draw_parents([1e-3, 1e-3, 1e3, 1e3], 4, seed=0)
    assert all(d.parents == (0, 1) for d in extreme)
    with pytest.raises(ValueError, match="n_parents"):
        G.draw_parents(losses, 1, n_parents=5)
    with pytest.raises(ValueError, match="n_children"):
        G.draw_parents(losses, 0)
