"""sfda: source-free domain adaptation of segmentation networks.

The stages are plain functions taking their typed config (:mod:`sfda.config`),
the same ones the ``sfda`` command calls::

    from sfda import load_config, AdaptConfig, adapt
    adapt(load_config(AdaptConfig, "adapt.yaml", ["optim.lr=1e-4"]))

:func:`sfda.adapt_model` adapts any PyTorch segmentation model already in
memory from target images alone. Imports are lazy so the command line starts fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "index_cases": "sfda.stages.data", "train_source": "sfda.stages.train", "train_prior": "sfda.stages.train",
    "make_prior": "sfda.stages.prior", "adapt": "sfda.stages.adapt", "adapt_model": "sfda.stages.adapt",
    "evaluate": "sfda.stages.evaluate", "predict": "sfda.stages.predict", "report": "sfda.stages.report",
    "run_experiment": "sfda.stages.experiment", "load_config": "sfda.config",
    "TrainConfig": "sfda.config", "PriorTrainConfig": "sfda.config", "PriorConfig": "sfda.config",
    "AdaptConfig": "sfda.config", "EvaluateConfig": "sfda.config", "PredictConfig": "sfda.config",
    "ReportConfig": "sfda.config", "ExperimentConfig": "sfda.config.experiment",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'sfda' has no attribute {name!r}")
