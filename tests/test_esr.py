"""ESR models: Table 1 parameter counts, shapes at every level, module plumbing, voting."""
import pytest
import torch

from fernb.ensemble import plurality_vote
from fernb.models import ESR, esr4, esr9, single_network, traditional_ensemble


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("build, expected", [
    (single_network, 131_208),                       # Table 1, single network
    (traditional_ensemble, 524_832),                 # Table 1, traditional ensemble
    (lambda: esr4(level=3), 355_104),                # Table 1, ESR-4 Lvl. 3
    (lambda: esr4(level=4), 243_936),                # Table 1, ESR-4 Lvl. 4
])
def test_table1_parameter_counts(build, expected):
    assert n_params(build()) == expected


def test_esr9_parameter_counts():
    model = esr9()
    assert n_params(model.base) == 374_784
    assert n_params(model.branches[0]) == 2_219_418
    assert n_params(model) == 374_784 + 9 * 2_219_418 == 20_349_546


def test_level_zero_is_traditional_ensemble_and_savings_match_paper():
    te = n_params(traditional_ensemble())
    assert n_params(ESR(level=0)) == te
    # Paper: "a substantial decrease of 32% at level 3 and 54% at level 4".
    assert round(100 * (1 - n_params(esr4(level=3)) / te)) == 32
    assert round(100 * (1 - n_params(esr4(level=4)) / te)) == 54


@pytest.mark.parametrize("level", range(6))
def test_lab_shapes_at_every_level(level):
    model = ESR(arch="lab", level=level, n_branches=3, n_classes=7, width=0.25)
    assert len(model.base) == level
    assert all(len(b.features) == 5 - level for b in model.branches)
    out = model(torch.rand(2, 1, 48, 48))
    assert out.shape == (2, 3, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("level", [0, 4, 8])
def test_wild_shapes_and_affect(level):
    model = ESR(arch="wild", level=level, n_branches=2, width=0.125)
    x = torch.rand(2, 3, 64, 64)
    assert model(x).shape == (2, 2, 8)
    assert model.forward_affect(x).shape == (2, 2, 2)
    assert model.predict_affect(x).shape == (2, 2)
    assert model.predict(x).shape == (2,)


def test_defaults_follow_the_paper():
    lab, wild = ESR(), ESR(arch="wild", width=0.125)
    assert (lab.level, len(lab.branches)) == (3, 4)
    assert (wild.level, len(wild.branches)) == (4, 9)
    assert lab.branches[0].affect is None and wild.branches[0].affect is not None


def test_affect_is_linear_on_relu_of_emotion_logits():
    model = ESR(arch="wild", n_branches=1, width=0.125).eval()
    x = torch.rand(3, 3, 64, 64)
    logits = model(x)[:, 0]
    expected = model.branches[0].affect(torch.relu(logits))
    torch.testing.assert_close(model.forward_affect(x)[:, 0], expected)


def test_lab_network_has_no_affect():
    with pytest.raises(RuntimeError, match="arch='wild'"):
        ESR(width=0.25).forward_affect(torch.rand(1, 1, 48, 48))


@pytest.mark.parametrize("kwargs", [dict(width=0.25), dict(level=0, n_branches=2, width=0.25),
                                    dict(arch="wild", n_branches=2, width=0.125)])
def test_every_parameter_gets_a_gradient(kwargs):
    model = ESR(**kwargs)
    chans = model.base[0][0].in_channels if len(model.base) else 1
    size = 64 if model.arch == "wild" else 48
    x = torch.rand(2, chans, size, size)
    loss = model(x).sum()
    if model.arch == "wild":
        loss = loss + model.forward_affect(x).sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_branches_are_registered_submodules():
    model = ESR(width=0.25)
    model.add_branch()
    keys = model.state_dict().keys()
    assert any(k.startswith("branches.4.") for k in keys)
    model.eval()
    assert all(not m.training for m in model.branches.modules())
    model.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in model.branches[4].parameters())


def test_add_branch_fresh_or_copy():
    model = ESR(n_branches=1, width=0.25)
    fresh = model.add_branch()
    assert not torch.equal(fresh.fc.weight, model.branches[0].fc.weight)
    copied = model.add_branch("copy")
    assert len(model.branches) == 3 and copied is not fresh
    for a, b in zip(copied.parameters(), fresh.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    with pytest.raises(ValueError, match="fresh"):
        model.add_branch("random")


def test_width_scales_channels():
    model = ESR(width=0.5)
    assert model.base[0][0].out_channels == 16 and model.branches[0].fc.in_features == 32


def test_reset_classifier():
    model = ESR(arch="wild", n_branches=2, width=0.125)
    model.reset_classifier(7)
    x = torch.rand(1, 3, 64, 64)
    assert model(x).shape == (1, 2, 7) and model.forward_affect(x).shape == (1, 2, 2)


def test_plurality_vote_ties_to_lowest_index():
    # Members vote 2, 1, 2, 1: a tie between classes 1 and 2 -> 1.
    logits = torch.tensor([[[0, 0, 5.0], [0, 5.0, 0], [0, 0, 5.0], [0, 5.0, 0]]])
    assert plurality_vote(logits).tolist() == [1]
    # Members vote 0, 2, 2: class 2 has the plurality even though member 1 is most confident.
    logits = torch.tensor([[[9.0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]]])
    assert plurality_vote(logits).tolist() == [2]
    with pytest.raises(ValueError, match="members"):
        plurality_vote(torch.zeros(2, 3))


def test_predict_restores_mode_and_needs_no_grad():
    model = ESR(width=0.25).train()
    pred = model.predict(torch.rand(4, 1, 48, 48))
    assert model.training and pred.shape == (4,) and not pred.requires_grad


@pytest.mark.parametrize("kwargs, match", [
    ({"arch": "vgg"}, "arch"), ({"level": 6}, "level"), ({"arch": "wild", "level": 9}, "level"),
    ({"n_branches": 0}, "n_branches"), ({"width": 0}, "width"), ({"n_classes": 1}, "n_classes"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ESR(**kwargs)


def test_wrong_input_channels():
    with pytest.raises(ValueError, match=r"\(batch, 1, H, W\)"):
        ESR(width=0.25)(torch.rand(2, 3, 48, 48))


def test_same_init_gives_added_branches_one_identical_draw():
    import torch
    from fernb.models import ESR
    model = ESR(level=3, n_branches=1, width=0.25, seed=3)
    for _ in range(3):
        model.add_branch("same")
    weights = [b.fc.weight for b in model.branches]
    assert torch.equal(weights[1], weights[2]) and torch.equal(weights[2], weights[3])
    assert not torch.equal(weights[0], weights[1])
    fresh = ESR(level=3, n_branches=2, width=0.25, seed=3)
    assert torch.equal(fresh.branches[1].fc.weight, weights[1])


@pytest.mark.parametrize("size, level, expected", [(96, 3, ("branch", 1)), (48, 3, ("base", 2)),
                                                   (48, 1, ("branch", 1)), (96, 5, ("base", 4))])
def test_cam_layer_is_the_deepest_block_at_least_five_pixels_wide(size, level, expected):
    model = ESR(arch="lab", level=level, n_branches=2, width=0.25)
    where, index = expected
    target = (model.base if where == "base" else model.branches[1].features)[index]
    assert model.cam_layer(member=1, image_size=size) is target


def test_cam_layer_follows_the_member_and_defaults_to_the_last_block():
    model = esr4(level=3, width=0.25)
    assert model.cam_layer(2) is model.branches[2].features[-1]
    assert model.cam_layer(-1) is model.branches[3].features[-1]
    shared = esr4(level=5, width=0.25)
    assert shared.cam_layer(1) is shared.cam_layer(3) is shared.base[-1]
    with pytest.raises(ValueError, match="member"):
        model.cam_layer(4)
    with pytest.raises(ValueError, match="image_size"):
        model.cam_layer(0, image_size=0)
