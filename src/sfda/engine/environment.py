"""What shapes a run's numbers besides its config, inputs and seed: the software and the arithmetic.

A seeded run repeats exactly only with the same torch build, the same number of torch threads and
the same CPU instruction set (torch's *CPU capability*: a convolution on AVX-512 gives other bits
than on AVX2, and training takes another path from the first step). Each stage records this in its
``stage.json`` (:meth:`sfda.stages.freshness.Stage.start`), so two runs that differ can say why.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import torch


#: the packages besides torch whose arithmetic reaches a run's numbers (augmentation, resampling)
PACKAGES = ("sfda", "numpy", "monai", "scipy")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:  # sfda run from a source tree that is not installed
        return "unknown"


def environment() -> dict:
    """This process's package versions, torch's CPU capability and thread count, and the GPU where
    CUDA is available."""
    env = {**{p: _version(p) for p in PACKAGES}, "torch": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name())
    return env


def differences(recorded: dict, now: dict) -> list[str]:
    """The keys of ``recorded`` whose value ``now`` differs, said as ``key old -> new``."""
    return [f"{k} {recorded[k]} -> {now.get(k)}" for k in sorted(recorded) if recorded[k] != now.get(k)]
