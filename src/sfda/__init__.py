"""sfda: source-free domain adaptation of segmentation networks.

Stages as functions live in :mod:`sfda.pipeline`; :func:`sfda.adapt` adapts any
PyTorch segmentation model from target images alone. Imports are lazy so the
command line starts fast.
"""

__version__ = "0.1.0"


def adapt(*args, **kwargs):
    from sfda.api import adapt as _adapt

    return _adapt(*args, **kwargs)
