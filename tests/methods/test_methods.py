"""The adaptation methods: the paper's claim on a tiny problem, and what each method may touch."""

from __future__ import annotations

import re

import copy

import numpy as np
import pytest
import torch
from torch import nn

import sfda
from sfda.stages import adapt as adapt_stage
from sfda.config import AdaptConfig, MethodConfig, load_config
from sfda.engine import loop
from sfda.errors import SfdaError
from sfda.losses import cross_entropy
from sfda.methods import METHODS, build_method
from sfda.methods.adaent import AdaEnt
from sfda.methods.base import bn_layers
from sfda.nets import build_net

# --------------------------------------------------------------------------- the paper's claim

SIZE = 32


def disks(n: int, rng: np.random.Generator, contrast: float = 1.0, noise: float = 0.3):
    """One bright disk (radius 5..7 px, ~11% of the image) per dark noisy image: (images, labels)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = np.zeros((n, 1, SIZE, SIZE), np.float32)
    labels = np.zeros((n, SIZE, SIZE), np.int64)
    for i in range(n):
        r = rng.uniform(5, 7)
        cy, cx = rng.uniform(r + 1, SIZE - r - 1, 2)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        labels[i] = disk
        images[i, 0] = contrast * disk + noise * rng.standard_normal((SIZE, SIZE))
    return images, labels


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 2, 1))


def foreground_fraction(model: nn.Module, images: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(images)).argmax(dim=1) > 0).float().mean())


@pytest.fixture(scope="module")
def source_model():
    """Pre-trained (200 Adam steps, ~1 s) on full-contrast disks; it segments them almost perfectly."""
    rng = np.random.default_rng(0)
    images, labels = disks(64, rng)
    torch.manual_seed(0)
    model = small_net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    for _ in range(200):
        idx = torch.randint(0, len(x), (16,))
        loss = cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert foreground_fraction(model, images) == pytest.approx(labels.mean(), rel=0.1)
    return model.eval()


def test_entropy_alone_collapses_adaent_keeps_the_prior(source_model):
    """Bateson et al.: minimising entropy alone drives the prediction to the majority class;
    the KL term to the class-ratio prior (AdaEnt) prevents it.

    Target domain: the disks' contrast drops from 1.0 to 0.4 in the same noise, so the source
    model finds only a fraction of them and is unsure about the rest.
    """
    images, labels = disks(48, np.random.default_rng(100), contrast=0.4)
    truth = float(labels.mean())
    before = foreground_fraction(source_model, images)
    assert 0.05 * truth < before < 0.5 * truth  # under-segmented, but the disks are still seen

    kw = dict(lr=3e-3, epochs=10, batch_size=8, seed=0)
    entropy = sfda.adapt_model(copy.deepcopy(source_model), images, method="entropy", **kw)
    ent_fraction = foreground_fraction(entropy, images)
    # entropy only: collapse towards background, and worse than not adapting at all
    assert ent_fraction < 0.3 * truth, (ent_fraction, truth)
    assert ent_fraction < 0.5 * before, (ent_fraction, before)
    for lam in (0.1, 1.0):
        adaent = sfda.adapt_model(copy.deepcopy(source_model), images, prior=(1 - truth, truth), method="adaent",
                            lam=lam, **kw)
        ada_fraction = foreground_fraction(adaent, images)
        # AdaEnt: the predicted size stays near the prior's
        assert 0.5 * truth < ada_fraction < 2.0 * truth, (lam, ada_fraction, truth)
        # and the disks it finds are the right ones
        with torch.no_grad():
            pred = adaent(torch.from_numpy(images)).argmax(dim=1).numpy()
        dice = 2 * ((pred == 1) & (labels == 1)).sum() / ((pred == 1).sum() + (labels == 1).sum())
        assert dice > 0.7, (lam, dice)


# --------------------------------------------------------------------------- source-freeness


def test_api_adaent_gets_no_source_data(monkeypatch):
    seen = {"step_source": [], "spec_source": []}
    real_step, real_fit = AdaEnt.step, loop.fit

    def step(self, model, batch, source=None):
        seen["step_source"].append(source)
        assert batch.labels is None  # no labels either
        return real_step(self, model, batch, source)

    def fit(model, method, spec):
        seen["spec_source"].append(spec.source)
        return real_fit(model, method, spec)

    monkeypatch.setattr(AdaEnt, "step", step)
    monkeypatch.setattr("sfda.stages.adapt.fit", fit)
    images = np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32)
    torch.manual_seed(0)
    sfda.adapt_model(build_net("unet", width=2, depth=1), images, prior=(0.9, 0.1), method="adaent", epochs=2,
               batch_size=2)
    assert seen["spec_source"] == [None]
    assert len(seen["step_source"]) == 4 and all(s is None for s in seen["step_source"])


def _adapt_cfg(tiny_cases, tiny_source, out, *extra) -> AdaptConfig:
    checkpoint, prior = tiny_source
    return load_config(AdaptConfig, None, [
        f"data.cases={tiny_cases}", "data.modality=inn", "data.subjects=[P03]", f"checkpoint={checkpoint}",
        f"prior={prior}", "optim.epochs=1", "optim.batch_size=4", "optim.max_steps_per_epoch=2",
        f"out={out}", *extra])


def test_pipeline_adaent_reads_only_unlabelled_target_slices(tiny_cases, tiny_source, tmp_path, monkeypatch):
    reads, steps = [], []
    real_slices, real_step = adapt_stage.slices_for, AdaEnt.step

    def slices_for(cl, subjects, modality, data, **kw):
        reads.append((modality, subjects, kw["with_labels"]))
        return real_slices(cl, subjects, modality, data, **kw)

    def step(self, model, batch, source=None):
        steps.append((source, batch.labels))
        return real_step(self, model, batch, source)

    monkeypatch.setattr(adapt_stage, "slices_for", slices_for)
    monkeypatch.setattr(AdaEnt, "step", step)
    adapt_stage.adapt(_adapt_cfg(tiny_cases, tiny_source, tmp_path / "run"), progress=False)
    assert reads == [("inn", ["P03"], False)]
    assert len(steps) == 2 and all(s is None and lab is None for s, lab in steps)
    assert (tmp_path / "run" / "last.pt").exists()


def test_pipeline_refuses_source_options_for_source_free_methods(tiny_cases, tiny_source, tmp_path):
    for method in ("adaent", "tent", "entropy", "adabn"):
        cfg = _adapt_cfg(tiny_cases, tiny_source, tmp_path / method, f"method.name={method}",
                         "method.source_modality=wat", "method.source_subjects=[P01]")
        with pytest.raises(SfdaError, match=f"'{method}' is source-free"):
            adapt_stage.adapt(cfg, progress=False)
        assert not (tmp_path / method).exists()


@pytest.mark.parametrize("method", ["adasource", "adversarial"])
def test_source_methods_need_source_options(tiny_cases, tiny_source, tmp_path, method):
    for extra in ([], ["method.source_modality=wat"], ["method.source_subjects=[P01]"]):
        cfg = _adapt_cfg(tiny_cases, tiny_source, tmp_path / "run", f"method.name={method}", *extra)
        with pytest.raises(SfdaError, match="--source-modality and --source-subjects"):
            adapt_stage.adapt(cfg, progress=False)
    assert not (tmp_path / "run").exists()
    images = np.zeros((2, 1, 16, 16), np.float32)
    with pytest.raises(SfdaError, match="needs labelled source images"):
        sfda.adapt_model(build_net("unet", width=2, depth=1), images, prior=(0.9, 0.1), method=method)


def test_a_method_needing_a_prior_is_refused_without_one_before_any_data_is_read(tiny_cases, tiny_source, tmp_path,
                                                                                  monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("target slices were read")

    monkeypatch.setattr(adapt_stage, "slices_for", no_reading)
    for extra, message in ((["prior="], "--prior (a table from `sfda prior`) is required"),
                           ([f"prior={tmp_path / 'none.csv'}"], "not found; create it with `sfda prior`")):
        cfg = _adapt_cfg(tiny_cases, tiny_source, tmp_path / "run", "method.name=adaent", *extra)
        with pytest.raises(SfdaError, match=re.escape(message)):
            adapt_stage.adapt(cfg, progress=False)
        assert not (tmp_path / "run").exists()


def test_unknown_method_lists_valid_names(tiny_cases, tiny_source, tmp_path):
    names = sorted(METHODS)
    with pytest.raises(SfdaError) as err:
        build_method("adaentt", MethodConfig())
    assert "adaentt" in str(err.value) and all(n in str(err.value) for n in names)
    choices = "it must be one of: adabn, adaent, adasource, adversarial, tent, entropy"
    with pytest.raises(SfdaError, match=f"config key 'name' = 'nope' is not allowed; {choices}"):
        sfda.adapt_model(build_net("unet", width=2, depth=1), np.zeros((2, 1, 16, 16), np.float32), method="nope")
    with pytest.raises(SfdaError, match=f"config key 'method.name' = 'nope' is not allowed; {choices}"):
        _adapt_cfg(tiny_cases, tiny_source, tmp_path / "run", "method.name=nope")  # refused where it is parsed
    built = _adapt_cfg(tiny_cases, tiny_source, tmp_path / "run")
    built.method = MethodConfig(name="nope")  # a config built in Python, never parsed
    with pytest.raises(SfdaError, match="unknown method 'nope'; choose one of: adabn, adaent"):
        adapt_stage.adapt(built, progress=False)
    assert not (tmp_path / "run").exists()


def test_api_adaent_needs_a_prior():
    with pytest.raises(SfdaError, match="needs a prior"):
        sfda.adapt_model(build_net("unet", width=2, depth=1), np.zeros((2, 1, 16, 16), np.float32), method="adaent")


# --------------------------------------------------------------------------- what each method may change


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return build_net("unet", width=2, depth=1)


def _target(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((8, 1, 16, 16)) * 2 + 1).astype(np.float32)


def _bn_param_names(model: nn.Module) -> set[str]:
    names = set()
    for mod_name, mod in model.named_modules():
        if mod in bn_layers(model):
            names |= {f"{mod_name}.weight", f"{mod_name}.bias"}
    return names


def test_tent_trains_only_bn_affine_parameters():
    model = _bn_net()
    before = copy.deepcopy(model.state_dict())
    bn_params = _bn_param_names(model)
    assert bn_params
    sfda.adapt_model(model, _target(), method="tent", epochs=2, batch_size=4, lr=1e-2)
    after = dict(model.named_parameters())
    changed = {n for n, p in after.items() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= bn_params, changed - bn_params
    assert all(p.requires_grad for p in model.parameters())  # the API leaves the model trainable
    assert not model.training


def test_adabn_changes_only_bn_running_statistics():
    model = _bn_net()
    before = copy.deepcopy(model.state_dict())
    images = _target(1)
    # inputs of the first BN layer, for the exact target mean that AdaBN must find
    with torch.no_grad():
        first_conv = model.stem[0](torch.from_numpy(images))
    sfda.adapt_model(model, images, method="adabn", batch_size=4)
    after = model.state_dict()
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name
    stats = [n for n in after if n.endswith(("running_mean", "running_var"))]
    assert stats and all(not torch.equal(after[n], before[n]) for n in stats)
    changed = {n for n in after if not torch.equal(after[n], before[n])}
    assert changed <= set(stats) | {n for n in after if n.endswith("num_batches_tracked")}
    # two equal batches, cumulative average: the running mean is the target mean
    assert torch.allclose(model.stem[1].running_mean, first_conv.mean(dim=(0, 2, 3)), atol=1e-5)


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_resumed_discriminator_follows_the_device_of_the_batches():
    """A checkpoint's discriminator loads on the CPU; a run on a GPU must get it on the GPU. The meta
    device stands in for CUDA: every parameter and Adam state must land on the batches' device."""
    from sfda.config import MethodConfig

    first = build_method("adversarial", MethodConfig(name="adversarial"))
    first._ensure(2, torch.device("cpu"))
    x = torch.rand(2, 2, 8, 8)
    first.disc(x).sum().backward()
    first.disc_opt.step()
    state = first.state_dict()
    resumed = build_method("adversarial", MethodConfig(name="adversarial"))
    resumed.load_state_dict(state)
    assert resumed.state_dict() is state  # kept as it is until a batch says where to put it
    resumed._ensure(2, torch.device("meta"))
    assert all(p.device.type == "meta" for p in resumed.disc.parameters())
    moments = [v for s in resumed.disc_opt.state.values() for k, v in s.items() if k != "step"]
    assert moments and all(v.device.type == "meta" for v in moments)


def test_adabn_statistics_are_the_pooled_mean_and_variance_of_every_pixel():
    """Five slices in batches of two: the last, partial batch must weigh as much as its pixels, and
    the variance must be the pooled one (not a mean of per-batch variances)."""
    from sfda.methods.adabn import reestimate_bn

    gen = torch.Generator().manual_seed(0)
    images = (torch.randn(5, 3, 4, 4, generator=gen) * torch.tensor([1.0, 2.0, 5.0]).view(1, 3, 1, 1)
              + torch.arange(5.0).view(5, 1, 1, 1)).numpy()
    model = nn.Sequential(nn.BatchNorm2d(3))
    reestimate_bn(model, images, batch_size=2)
    x = torch.from_numpy(images).double().transpose(0, 1).reshape(3, -1)
    assert torch.allclose(model[0].running_mean.double(), x.mean(dim=1), atol=1e-5)
    assert torch.allclose(model[0].running_var.double(), x.var(dim=1, unbiased=True), rtol=1e-5)
    assert not model.training
