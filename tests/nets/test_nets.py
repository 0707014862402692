"""Shape, gradient and checkpoint round-trip checks for every registered network."""

from __future__ import annotations

import pytest
import torch

from sfda.errors import SfdaError
from sfda.nets import NET_KIND, NETS, build_net, net_names
from sfda.nets.enet import ENet

KS = (2, 4)


def _expected_shape(name: str, n: int, k: int, h: int, w: int) -> tuple[int, ...]:
    """Segmentation nets give per-pixel logits; the regressor gives per-image ratios."""
    return (n, k, h, w) if NET_KIND[name] == "segmentation" else (n, k)


def _make(name: str, k: int, in_channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_net(name, in_channels=in_channels, num_classes=k)


def test_registry_consistent() -> None:
    assert net_names() == ["enet", "regressor", "unet"]
    assert set(NET_KIND) == set(NETS)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", net_names())
def test_forward_shape_and_finite(name: str, k: int) -> None:
    net = _make(name, k)
    out = net(torch.randn(2, 1, 64, 64))
    assert out.shape == _expected_shape(name, 2, k, 64, 64)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", net_names())
def test_backward_finite_grads(name: str, k: int) -> None:
    net = _make(name, k)
    out = net(torch.randn(2, 1, 64, 64))
    # Random weights: a plain sum of softmax outputs is constant and has zero gradient.
    (out * torch.randn_like(out)).sum().backward()
    for pname, param in net.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, pname
            assert torch.isfinite(param.grad).all(), pname


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", net_names())
def test_state_dict_round_trip(name: str, k: int, tmp_path) -> None:
    net = _make(name, k)
    net(torch.randn(2, 1, 64, 64))  # train-mode pass moves BatchNorm running stats
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)

    torch.manual_seed(123)  # different init, so a no-op load would be caught
    fresh = build_net(name, in_channels=1, num_classes=k)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    net.eval()
    fresh.eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), fresh(x))


@pytest.mark.parametrize("name", net_names())
def test_three_channels_non_square(name: str) -> None:
    net = _make(name, 2, in_channels=3)
    out = net(torch.randn(1, 3, 48, 32))
    assert out.shape == _expected_shape(name, 1, 2, 48, 32)
    assert torch.isfinite(out).all()


def test_enet_many_input_channels() -> None:
    """With >= 16 input channels the initial block drops its max-pool branch."""
    out = ENet(in_channels=20, num_classes=3)(torch.randn(1, 20, 32, 32))
    assert out.shape == (1, 3, 32, 32)


def test_enet_parameter_count() -> None:
    count = sum(p.numel() for p in ENet(in_channels=1, num_classes=2).parameters())
    print(f"ENet parameters (in_channels=1, K=2): {count}")
    assert abs(count - 360_000) <= 36_000


def test_regressor_outputs_are_ratios() -> None:
    net = _make("regressor", 4)
    out = net(torch.randn(3, 1, 16, 24))
    assert (out >= 0).all()
    assert torch.allclose(out.sum(dim=1), torch.ones(3), atol=1e-6)


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(SfdaError, match="unknown network 'foo'; choose one of: enet, regressor, unet"):
        build_net("foo")


def test_bad_kwargs_name_the_network_and_arguments() -> None:
    with pytest.raises(SfdaError, match=r"'unet'.*in_channels, num_classes, width, depth, channels_last"):
        build_net("unet", widht=8)


@pytest.mark.parametrize("name", ["enet", "unet"])
def test_indivisible_size_is_a_clear_error(name: str) -> None:
    with pytest.raises(SfdaError, match="divisible"):
        _make(name, 2)(torch.randn(1, 1, 36, 36))


def test_enet_unpool_matches_torch_values_and_gradients() -> None:
    import torch.nn.functional as F

    from sfda.nets.enet import max_unpool

    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 14)
    pooled, idx = F.max_pool2d(x, 2, 2, return_indices=True)
    a = pooled.clone().requires_grad_(True)
    b = pooled.clone().requires_grad_(True)
    ours = max_unpool(a, idx, (10, 14))
    ref = F.max_unpool2d(b, idx, 2, 2, output_size=(10, 14))
    assert torch.equal(ours, ref)
    w = torch.randn_like(ref)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_unet_channels_last_same_outputs_and_gradients_as_contiguous() -> None:
    torch.manual_seed(0)
    fast = build_net("unet", width=4, depth=2)
    plain = build_net("unet", width=4, depth=2, channels_last=False)
    plain.load_state_dict(fast.state_dict())
    assert fast.stem[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert not fast.stem[3].weight.is_contiguous()  # (the first conv has one input channel: both layouts)
    assert plain.stem[3].weight.is_contiguous()
    x = torch.randn(3, 1, 16, 12)
    out_fast, out_plain = fast(x), plain(x)
    assert out_fast.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out_fast, out_plain, atol=1e-5)
    out_fast.square().sum().backward()
    out_plain.square().sum().backward()
    assert torch.allclose(fast.stem[0].weight.grad, plain.stem[0].weight.grad, rtol=1e-4, atol=1e-5)


def test_unet_layout_survives_loading_contiguous_weights() -> None:
    import copy

    net = build_net("unet", width=4, depth=2)
    net.load_state_dict({k: v.contiguous() for k, v in net.state_dict().items()})
    assert net.stem[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert copy.deepcopy(net).to("cpu").stem[3].weight.is_contiguous(memory_format=torch.channels_last)
