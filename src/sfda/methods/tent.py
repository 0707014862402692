"""TENT (Wang et al. 2021): entropy only, training just the normalisation affine
parameters, with batch statistics (BN in train mode); instance, group and layer norms (nnU-Net,
MONAI) have their affine parameters trained alike."""

from __future__ import annotations

from sfda.errors import SfdaError
from sfda.losses import entropy_loss
from sfda.methods.base import Batch, Method, norm_layers


class Tent(Method):
    name = "tent"  # its facts (display name, prior, source images, per scan): sfda.config.methods

    def parameters(self, model):
        params = []
        for m in norm_layers(model):
            params += [p for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None]
        if not params:
            raise SfdaError("tent trains the normalisation layers' affine parameters, but this network has none; "
                            "use --method adaent or entropy")
        return params

    def step(self, model, batch: Batch, source=None):
        logits = model(batch.images)
        ent = entropy_loss(logits, batch.mask)
        return ent, logits, {"entropy": float(ent.detach())}
