import pytest
import torch

from fernb import device as D
from fernb.evaluate import predict
from fernb.models import single_network


def test_fp32_never_autocasts():
    chosen = D.resolve_precision("fp32", torch.device("cpu"))
    assert chosen.name == "fp32" and chosen.dtype is None and not chosen.scaled
    with chosen.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_autocasts_the_forward_pass_on_cpu():
    chosen = D.resolve_precision("bf16", torch.device("cpu"))
    assert chosen.name == "bf16" and chosen.dtype == torch.bfloat16 and not chosen.scaled
    with chosen.autocast():
        out = torch.nn.Linear(4, 2)(torch.ones(3, 4))
    assert out.dtype == torch.bfloat16


def test_auto_follows_the_cpus_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(D, "native_bf16", lambda device: True)
    assert D.resolve_precision("auto", cpu).name == "bf16"
    monkeypatch.setattr(D, "native_bf16", lambda device: False)
    assert D.resolve_precision("auto", cpu).name == "fp32"


def test_unknown_precision_and_unsupported_devices_are_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        D.resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="'bf16' is not supported on mps"):
        D.resolve_precision("bf16", torch.device("mps"))
    assert D.resolve_precision("auto", torch.device("mps")).name == "fp32"


def test_channels_last_is_held_for_the_block_and_restored():
    model = single_network(width=0.25)
    weight = model.branches[0].features[1][0].weight  # (16, 8, 3, 3)
    with D.channels_last(model) as active:
        assert active and weight.is_contiguous(memory_format=torch.channels_last)
        assert not weight.is_contiguous()
    assert weight.is_contiguous()
    linear = torch.nn.Linear(3, 2)
    with D.channels_last(linear) as active:
        assert not active
    x = torch.rand(2, 1, 8, 8)
    assert D.to_memory_format(x, True).is_contiguous(memory_format=torch.channels_last)
    assert D.to_memory_format(x, False) is x


def test_bf16_prediction_is_fp32_and_close_to_fp32():
    torch.manual_seed(0)
    model = single_network(width=0.25)
    x = torch.rand(8, 1, 48, 48)
    full = predict(model, x, device="cpu", precision="fp32")
    half = predict(model, x, device="cpu", precision="bf16")
    assert half.dtype == torch.float32 and half.is_contiguous()
    torch.testing.assert_close(half, full, atol=0.1, rtol=0.05)
    assert not torch.equal(half, full)


def test_a_computed_precision_configures_a_run_again():
    """A stored run's key holds the computed name (fp32, bf16, fp16-amp); each is accepted
    again, so the key's precision can configure the run that recomputes it."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for name in ("fp32", "bf16"):
        assert D.resolve_precision(D.computed_precision(name, "cpu"), cpu).name == name
    amp = D.resolve_precision("fp16-amp", cuda)
    assert amp.name == "fp16-amp" and amp.dtype == torch.float16 and amp.scaled
    with pytest.raises(ValueError, match="'fp16-amp' is CUDA's mixed precision"):
        D.resolve_precision("fp16-amp", cpu)
