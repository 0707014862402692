"""The paper's losses: entropy, the KL prior term and the padding mask."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sfda.errors import SfdaError
from sfda.losses import cross_entropy, entropy_loss, kl_prior, pixel_entropy, predicted_ratios

DIRECTIONS = ("paper", "code")


def _logits(seed: int, shape=(3, 4, 5, 6), scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# --------------------------------------------------------------------------- entropy


def test_entropy_zero_for_one_hot_logits():
    labels = torch.randint(0, 3, (2, 5, 7), generator=torch.Generator().manual_seed(0))
    logits = torch.full((2, 3, 5, 7), -1000.0)
    logits.scatter_(1, labels.unsqueeze(1), 1000.0)
    assert torch.all(pixel_entropy(logits) == 0)
    assert entropy_loss(logits).item() == 0.0


@pytest.mark.parametrize("k", [2, 3, 5])
def test_entropy_maximal_log_k_for_uniform_logits(k):
    logits = torch.full((2, k, 4, 4), 0.7, dtype=torch.float64)
    assert torch.allclose(pixel_entropy(logits), torch.full((2, 4, 4), math.log(k), dtype=torch.float64))
    assert entropy_loss(logits).item() == pytest.approx(math.log(k))
    # and nothing exceeds it
    rand = _logits(1, (4, k, 6, 6))
    assert pixel_entropy(rand).max().item() <= math.log(k) + 1e-12


def test_entropy_mask_excludes_padding():
    logits = _logits(2)
    mask = torch.zeros(3, 5, 6, dtype=torch.bool)
    mask[:, 1:4, 2:5] = True
    other = logits.clone()
    other[~mask.unsqueeze(1).expand_as(other)] = torch.randn(int((~mask).sum()) * 4, dtype=torch.float64) * 50
    assert entropy_loss(other, mask).item() == entropy_loss(logits, mask).item()
    # the masked mean is the mean over the real pixels only
    expected = pixel_entropy(logits)[mask].mean()
    assert entropy_loss(logits, mask).item() == pytest.approx(expected.item(), rel=1e-12)


# --------------------------------------------------------------------------- KL prior


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_kl_zero_when_prior_matches_prediction(direction):
    logits = _logits(3)
    mask = torch.ones(3, 5, 6, dtype=torch.bool)
    mask[:, :, :2] = False
    tau = predicted_ratios(logits, mask)
    assert kl_prior(logits, tau, mask, direction).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_kl_positive_when_prior_differs(direction):
    logits = _logits(4, (2, 2, 4, 4))
    prior = torch.tensor([[0.99, 0.01], [0.2, 0.8]], dtype=torch.float64)
    assert kl_prior(logits, prior, None, direction).item() > 1e-3


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_kl_mask_excludes_padding(direction):
    logits = _logits(5)
    mask = torch.zeros(3, 5, 6, dtype=torch.bool)
    mask[:, 1:, 1:5] = True
    prior = torch.softmax(_logits(6, (3, 4)), dim=1)
    other = logits.clone()
    other[~mask.unsqueeze(1).expand_as(other)] = 1e3
    assert kl_prior(other, prior, mask, direction).item() == kl_prior(logits, prior, mask, direction).item()
    ratios = predicted_ratios(other, mask)
    assert torch.allclose(ratios.sum(dim=1), torch.ones(3, dtype=torch.float64))


def test_kl_unknown_direction():
    with pytest.raises(SfdaError, match="paper or code"):
        kl_prior(_logits(0), torch.full((3, 4), 0.25), None, "sideways")


def test_kl_paper_direction_punishes_missing_class_more():
    # τ̂ → 0 for a class the prior expects: Eq. 3 (paper) is a barrier, the code's direction is mild.
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 0] = 20.0  # all background
    prior = torch.tensor([[0.9, 0.1]])
    paper = kl_prior(logits, prior, None, "paper").item()
    code = kl_prior(logits, prior, None, "code").item()
    assert paper > 1.0 > code


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_gradients_finite_at_saturation_and_zero_prior(direction):
    logits = torch.full((2, 3, 4, 4), -1e4)
    logits[:, 0, :2] = 1e4
    logits[:, 1, 2:] = 1e4
    logits.requires_grad_(True)
    prior = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5]])
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    loss = entropy_loss(logits, mask) + kl_prior(logits, prior, mask, direction)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_cross_entropy_gradients_finite_at_saturation():
    logits = torch.full((1, 2, 3, 3), -1e4)
    logits[:, 0] = 1e4
    logits.requires_grad_(True)
    labels = torch.ones(1, 3, 3, dtype=torch.long)  # confidently wrong
    loss = cross_entropy(logits, labels, torch.ones(1, 3, 3, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_class_weights_scale_the_entropy_terms():
    logits = _logits(7, (2, 2, 3, 3))
    plain = entropy_loss(logits)
    assert entropy_loss(logits, class_weights=torch.tensor([1.0, 1.0], dtype=torch.float64)).item() == \
        pytest.approx(plain.item())
    assert entropy_loss(logits, class_weights=torch.tensor([2.0, 2.0], dtype=torch.float64)).item() == \
        pytest.approx(2 * plain.item())


# --------------------------------------------------------------------------- properties

_shapes = st.tuples(st.integers(1, 4), st.integers(2, 4), st.integers(1, 5), st.integers(1, 5))


@st.composite
def _cases(draw):
    n, k, h, w = draw(_shapes)
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 100.0]))
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g, dtype=torch.float64) * scale
    prior = torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64) * 3, dim=1)
    # some exact zeros in the prior, as image-level tags produce
    zero = torch.rand(n, k, generator=g) < 0.3
    zero[:, 0] = False
    prior = prior.masked_fill(zero, 0.0)
    prior = prior / prior.sum(dim=1, keepdim=True)
    mask = torch.rand(n, h, w, generator=g) < 0.8
    mask.view(n, -1)[:, 0] = True
    perm = torch.randperm(n, generator=g)
    return logits, prior, mask, perm


@settings(max_examples=30, deadline=None)
@given(_cases())
def test_property_entropy_non_negative(case):
    logits, _, mask, _ = case
    assert (pixel_entropy(logits) >= -1e-12).all()
    assert entropy_loss(logits, mask).item() >= -1e-12
    assert pixel_entropy(logits).max().item() <= math.log(logits.shape[1]) + 1e-9


@settings(max_examples=30, deadline=None)
@given(_cases(), st.sampled_from(DIRECTIONS))
def test_property_kl_non_negative_and_batch_order_invariant(case, direction):
    logits, prior, mask, perm = case
    kl = kl_prior(logits, prior, mask, direction)
    # exact zeros in the prior are clamped to EPS inside the code direction, which can
    # only increase the value; tiny negative values would be rounding.
    assert kl.item() >= -1e-9
    permuted = kl_prior(logits[perm], prior[perm], mask[perm], direction)
    assert permuted.item() == pytest.approx(kl.item(), rel=1e-9, abs=1e-12)


def test_kl_batch_scope_pools_the_ratios():
    # Image 0 is all background, image 1 all foreground: pooled τ̂ = (0.5, 0.5).
    logits = torch.zeros(2, 2, 4, 4)
    logits[0, 0], logits[1, 1] = 50.0, 50.0
    swapped = torch.tensor([[0.5, 0.5], [0.5, 0.5]])  # per image wrong, pooled right
    assert float(kl_prior(logits, swapped, scope="batch")) == pytest.approx(0.0, abs=1e-6)
    assert float(kl_prior(logits, swapped, scope="image")) > 1.0
    # Pooled prior (0.8, 0.2) against pooled τ̂ (0.5, 0.5): 0.8 log 1.6 + 0.2 log 0.4.
    prior = torch.tensor([[0.9, 0.1], [0.7, 0.3]])
    expected = 0.8 * math.log(1.6) + 0.2 * math.log(0.4)
    assert float(kl_prior(logits, prior, scope="batch")) == pytest.approx(expected, rel=1e-5)
    # Padding counts for neither side: mask out half of image 1, whose pixels then weigh half as much.
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[1, :2] = False
    tau_hat = torch.tensor([16 / 24, 8 / 24])
    tau_e = (16 * prior[0] + 8 * prior[1]) / 24
    expected = float((tau_e * (tau_e / tau_hat).log()).sum())
    assert float(kl_prior(logits, prior, mask, scope="batch")) == pytest.approx(expected, rel=1e-5)


def test_kl_unknown_scope():
    with pytest.raises(SfdaError, match="scope"):
        kl_prior(torch.zeros(1, 2, 2, 2), torch.tensor([[0.5, 0.5]]), scope="subject")


def test_the_losses_are_dimension_free_3d_volumes_as_slices():
    """A (N, K, D, H, W) volume gives the ratios, entropy and KL of the same voxels laid out as one slice."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 6)
    mask = torch.rand(2, 4, 5, 6) > 0.3
    prior = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]])
    flat, flat_mask = logits.reshape(2, 3, 1, -1), mask.reshape(2, 1, -1)
    assert torch.allclose(predicted_ratios(logits, mask), predicted_ratios(flat, flat_mask))
    assert torch.allclose(entropy_loss(logits, mask, torch.tensor([1.0, 2.0, 3.0])),
                          entropy_loss(flat, flat_mask, torch.tensor([1.0, 2.0, 3.0])))
    for scope in ("image", "batch"):
        assert torch.allclose(kl_prior(logits, prior, mask, scope=scope), kl_prior(flat, prior, flat_mask, scope=scope))


# --------------------------------------------------------------------------- Dice + CE (nnU-Net)


def test_dice_ce_is_ce_plus_one_minus_mean_foreground_batch_dice_by_hand():
    """Two 1x3 images, three classes, the last pixel of the second image padding: every term by hand."""
    import numpy as np

    from sfda.losses import batch_soft_dice, dice_ce

    logits = _logits(7, shape=(2, 3, 1, 3), scale=2.0)
    labels = torch.tensor([[[0, 1, 2]], [[2, 1, 1]]])
    mask = torch.tensor([[[True, True, True]], [[True, True, False]]])
    p = torch.softmax(logits, dim=1).numpy()
    real = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]  # (image, column) of the real pixels
    ce = np.mean([-np.log(p[n, labels[n, 0, w], 0, w]) for n, w in real])
    dices = []
    for k in (1, 2):  # foreground classes only, pooled over both images
        inter = sum(p[n, k, 0, w] for n, w in real if labels[n, 0, w] == k)
        total = sum(p[n, k, 0, w] for n, w in real) + sum(1 for n, w in real if labels[n, 0, w] == k)
        dices.append((2 * inter + 1e-5) / (total + 1e-5))
    loss, logs = dice_ce(logits, labels, mask)
    assert float(loss) == pytest.approx(ce + 1 - np.mean(dices), rel=1e-9)
    assert logs["ce"] == pytest.approx(ce) and logs["soft_dice"] == pytest.approx(np.mean(dices))
    assert batch_soft_dice(logits, labels, mask, include_background=True).shape == (3,)
    # padding never counts: changing what lies under it changes nothing
    other = labels.clone()
    other[1, 0, 2] = 0
    assert float(dice_ce(logits, other, mask)[0]) == pytest.approx(float(loss), rel=1e-12)


def test_soft_dice_of_a_perfect_prediction_is_one():
    from sfda.losses import batch_soft_dice

    labels = torch.tensor([[[0, 1], [2, 1]]])
    logits = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).double() * 1000
    assert torch.allclose(batch_soft_dice(logits, labels), torch.ones(2, dtype=torch.float64))
