"""Typed configs: every option declared once, with its default and its allowed values.

:mod:`sfda.config.core` reads them (defaults, then a YAML file, then dotted
``key=value`` overrides; unknown keys and out-of-range values refused);
:mod:`sfda.config.stages` declares one config per stage. An experiment's
sections reuse the stages' *settings* classes, so an option has one default.
"""

from sfda.config.core import (config_to_dict, load_config, merge_into, nest, opt, parse_override, read_yaml,
                              save_config)
from sfda.config.stages import (AdaptConfig, AdaptSettings, DataConfig, EvaluateConfig, MethodConfig,
                                NnunetImportConfig, OptimConfig, PredictConfig, PriorConfig, PriorSettings,
                                PriorTrainConfig, PriorTrainSettings, ReportConfig, RunConfig, SlicingConfig, SpatialConfig,
                                TrainConfig, TrainSettings)

__all__ = [
    "AdaptConfig", "AdaptSettings", "DataConfig", "EvaluateConfig", "MethodConfig", "NnunetImportConfig", "OptimConfig",
    "PredictConfig", "PriorConfig", "PriorSettings", "PriorTrainConfig", "PriorTrainSettings", "ReportConfig",
    "RunConfig", "SlicingConfig", "SpatialConfig", "TrainConfig", "TrainSettings", "config_to_dict", "load_config", "merge_into",
    "nest", "opt", "parse_override", "read_yaml", "save_config",
]
