"""train-source's recipe in the loop's parts: foreground oversampling, the poly schedule, SGD Nesterov."""

from __future__ import annotations

import pytest
import torch

from sfda.config import OptimConfig
from sfda.engine.batches import epoch_batches, forced_foreground
from sfda.engine.optim import build_optimizer, build_scheduler
from sfda.errors import SfdaError


def _epoch(share: float, seed: int = 3, n: int = 40, batch_size: int = 6):
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    fg = torch.tensor([5, 17])  # 2 of 40 samples hold a structure
    return perm, epoch_batches(perm, n // batch_size, batch_size, fg, share, gen)


@pytest.mark.parametrize("share, forced", [(0.33, 2), (0.5, 3), (1.0, 6)])
def test_oversampling_gives_the_asked_share_of_foreground_samples(share, forced):
    perm, batches = _epoch(share)
    assert forced_foreground(6, share) == forced
    for s, b in enumerate(batches):
        assert len(b) == 6
        assert set(b[6 - forced:].tolist()) <= {5, 17}  # the forced places: foreground samples only
        assert torch.equal(b[:6 - forced], perm[s * 6:s * 6 + 6 - forced])  # the rest: the permutation
    share_fg = sum(int(torch.isin(b, torch.tensor([5, 17])).sum()) for b in batches) / (6 * len(batches))
    assert share_fg >= forced / 6


def test_oversampling_repeats_under_the_seed_and_is_absent_by_default():
    assert all(torch.equal(a, b) for a, b in zip(_epoch(0.33)[1], _epoch(0.33)[1]))
    perm, plain = _epoch(0.0)
    assert all(torch.equal(b, perm[s * 6:(s + 1) * 6]) for s, b in enumerate(plain))


def test_poly_schedule_by_hand():
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimConfig(lr=0.01, epochs=4, schedule="poly"))
    sched = build_scheduler(opt, OptimConfig(lr=0.01, epochs=4, schedule="poly"))
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.01, 0.01 * 0.75 ** 0.9, 0.01 * 0.5 ** 0.9, 0.01 * 0.25 ** 0.9])


def test_sgd_nesterov_is_built_and_refused_without_sgd_momentum():
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = build_optimizer(p, OptimConfig(optimizer="sgd", lr=1e-2, momentum=0.99, nesterov=True))
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["nesterov"] is True and opt.defaults["momentum"] == 0.99
    assert build_optimizer(p, OptimConfig(optimizer="sgd")).defaults["nesterov"] is False
    for bad in (OptimConfig(optimizer="adam", nesterov=True), OptimConfig(optimizer="sgd", momentum=0, nesterov=True)):
        with pytest.raises(SfdaError, match="nesterov"):
            build_optimizer(p, bad)
