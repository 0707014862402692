"""The environment a run records: what makes two runs of one config and seed compute other bits."""

from __future__ import annotations

import numpy as np
import torch

from sfda.engine.environment import differences, environment


def test_environment_names_torch_its_cpu_capability_and_threads():
    env = environment()
    assert env["torch"] == torch.__version__
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["threads"] == torch.get_num_threads()
    assert env["numpy"] == np.__version__ and ("gpu" in env) == torch.cuda.is_available()


def test_differences_say_each_changed_key_with_both_values():
    first = {"torch": "2.13.0", "cpu_capability": "AVX2", "threads": 1}
    assert differences(first, {**first, "cpu_capability": "AVX512", "threads": 2}) == [
        "cpu_capability AVX2 -> AVX512", "threads 1 -> 2"]
    assert differences(first, dict(first)) == []
