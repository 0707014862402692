"""Checkpoints rebuild their network alone, and never run code when loaded."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from sfda.config.card import ModelCard, Network, Normalization, Slicing, Training
from sfda.engine.checkpoint import FORMAT, load_checkpoint, load_model, save_checkpoint
from sfda.errors import SfdaError
from sfda.nets import build_net

NET_ARGS = {"in_channels": 1, "num_classes": 3, "width": 4, "depth": 2}


def _card(epoch: int | None = None, args: dict = NET_ARGS) -> ModelCard:
    return ModelCard(network=Network("unet", args), kind="segmentation", labels=("bg", "a", "b"), modality="wat",
                     slicing=Slicing(axis=0, pad_multiple=16, norm=Normalization.percentile(0.5, 99.5)),
                     training=Training(epoch=epoch))


def test_round_trip_rebuilds_model_from_checkpoint_alone(tmp_path):
    torch.manual_seed(0)
    model = build_net("unet", **NET_ARGS)
    # make BN running stats non-trivial so buffers are checked too
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 1, 16, 16) * 3 + 1)
    model.eval()
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(path, model, _card(epoch=3), train_state={"epoch": 3, "log": [{"loss": 0.5}]})
    assert path.is_file() and not [p for p in path.parent.iterdir() if p.name.startswith(".")]

    ckpt = load_checkpoint(path)
    assert ckpt["format"] == FORMAT and ckpt["train_state"]["epoch"] == 3
    rebuilt, card = load_model(path)
    assert card == _card(epoch=3)
    assert not rebuilt.training
    original = model.state_dict()
    for name, tensor in rebuilt.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


class _Shell:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Open:
    """Unpickling this would create a file through builtins.open."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("evil_cls", [_Shell, _Open])
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_refused_and_not_run(tmp_path, evil_cls, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "version": 1, "meta": evil_cls(marker), "state_dict": {}}
    if writer == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh, protocol=2)
    with pytest.raises(SfdaError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "refused" in msg
    assert "\n" not in msg
    assert not marker.exists()
    with pytest.raises(SfdaError):
        load_model(path)
    assert not marker.exists()


def test_malicious_payload_is_real(tmp_path):
    """Control: the same file *does* run code with an unsafe load, so the test above means something."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"meta": _Open(marker)}, path)
    obj = torch.load(path, weights_only=False)
    obj["meta"].close()
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_random_bytes_refused(tmp_path):
    # Many blobs: garbage makes torch's unpickler fail in many ways (UnpicklingError, IndexError,
    # KeyError, ...); every one must become an SfdaError naming the file.
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.pt"
    for size in [1, 7, 64, 4096] + [512] * 196:
        path.write_bytes(rng.bytes(size))
        with pytest.raises(SfdaError) as err:
            load_checkpoint(path)
        assert str(path) in str(err.value)


def test_truncated_checkpoint_refused(tmp_path):
    model = build_net("unet", **NET_ARGS)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, _card())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SfdaError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("obj", [{"a": 1}, [1, 2, 3], {"format": "other"}, torch.zeros(3)])
def test_valid_torch_file_that_is_not_an_sfda_checkpoint(tmp_path, obj):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(SfdaError, match="not an sfda checkpoint") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(SfdaError, match="not found") as err:
        load_checkpoint(tmp_path / "nope.pt")
    assert "nope.pt" in str(err.value)


def test_weights_that_do_not_fit_the_declared_network(tmp_path):
    model = build_net("unet", **NET_ARGS)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, _card(args={**NET_ARGS, "width": 8}))
    with pytest.raises(SfdaError, match="do not fit") as err:
        load_model(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("net", ["enet", "unet"])
def test_folding_batchnorm_keeps_the_outputs(net):
    """predict folds BN into the convolutions before it: same probabilities in eval mode."""
    import copy

    from sfda.nets.fold import fold_batchnorm
    from sfda.nets import build_net

    torch.manual_seed(0)
    model = build_net(net, in_channels=1, num_classes=2)
    model.train()
    with torch.no_grad():  # give BN non-trivial running statistics
        for _ in range(3):
            model(torch.randn(4, 1, 32, 32) * 3 + 1)
    model.eval()
    folded = fold_batchnorm(copy.deepcopy(model))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), folded(x), atol=1e-4)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert n_bn < sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
