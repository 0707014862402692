"""The stages of sfda, one module each, each a plain function taking its typed config.

``data`` (case lists) -> ``train`` (source model, Oracle, ratio regressor) ->
``prior`` (τe table) -> ``adapt`` (adapted checkpoint) -> ``evaluate`` (3D
metrics) / ``predict`` (masks) -> ``report``; ``experiment`` runs them all.
The CLI and the Python API (:mod:`sfda`) call these functions.
"""
