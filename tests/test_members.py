"""Reproducible member streams and the independent-network ensemble."""
import pytest
import torch
from torch import nn

from fernb.ensemble import plurality_vote
from fernb.models.backbones import resnet18
from fernb.models.members import Members, as_members
from fernb.seeding import derive_seed, seeded


def test_derived_seeds_differ_by_key_and_repeat():
    assert derive_seed(0, 1) == derive_seed(0, 1)
    assert len({derive_seed(0, k) for k in range(100)}) == 100
    assert derive_seed(0, 1) != derive_seed(1, 1)
    assert derive_seed(0, "base") != derive_seed(0, "branch")
    with pytest.raises(TypeError, match="ints or strings"):
        derive_seed(0, 1.5)


def test_seeded_leaves_the_callers_rng_alone():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    with seeded(0, 5):
        inside = torch.rand(2)
    assert torch.equal(torch.rand(3), expected)
    with seeded(0, 5):
        assert torch.equal(torch.rand(2), inside)


def test_members_start_different_and_reproducibly():
    def build():
        return nn.Linear(4, 3)

    torch.manual_seed(0)
    a = Members.build(build, 3, seed=1)
    torch.rand(100)  # whatever else drew from the global RNG in between
    b = Members.build(build, 3, seed=1)
    weights = [net.weight for net in a.networks]
    assert all(not torch.equal(weights[i], weights[j]) for i in range(3) for j in range(i + 1, 3))
    assert all(torch.equal(x.weight, y.weight) for x, y in zip(a.networks, b.networks))


def test_members_output_batch_members_classes():
    model = Members.build(lambda: nn.Linear(4, 3), 5, seed=0)
    x = torch.randn(2, 4)
    out = model(x)
    assert out.shape == (2, 5, 3) and len(model) == 5
    assert torch.equal(out[:, 2], model.networks[2](x))
    assert torch.equal(model.member(2)(x), out[:, 2:3])
    assert plurality_vote(out).shape == (2,)


def test_as_members_shapes():
    assert as_members(torch.zeros(2, 3)).shape == (2, 1, 3)
    assert as_members(torch.zeros(2, 4, 3)).shape == (2, 4, 3)
    with pytest.raises(ValueError, match="batch, classes"):
        as_members(torch.zeros(2))
    with pytest.raises(ValueError, match="at least one"):
        Members([])


def test_contract_needs_networks_that_follow_it():
    plain = Members.build(lambda: nn.Linear(4, 3), 2, seed=0)
    with pytest.raises(TypeError, match="Linear has no forward_features"):
        plain.forward_features(torch.randn(2, 4))
    with pytest.raises(TypeError, match="Linear has no cam_layer"):
        plain.cam_layer(1)
    with pytest.raises(ValueError, match="member must be an integer in \\[-2, 2\\)"):
        plain.member(2)
    model = Members.build(lambda: resnet18(n_classes=3, width=0.0625), 2, seed=0).eval()
    with pytest.raises(ValueError, match="tuple of 2"):
        model.forward_head(model.forward_features(torch.rand(1, 3, 32, 32))[:1])
    assert model.cam_layer(-1) is model.networks[1].cam_layer()
