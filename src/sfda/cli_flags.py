"""The command line's flags: flag -> config key per command, and their help texts (used by
:mod:`sfda.cli`)."""

from __future__ import annotations

# Flag -> config key, per command. Flags of true/false options are listed in SWITCHES.
COMMON = {"cases": "data.cases", "modality": "data.modality", "subjects": "data.subjects",
          "val_subjects": "data.val_subjects", "axis": "data.axis", "out": "out", "seed": "seed",
          "device": "device", "epochs": "optim.epochs", "lr": "optim.lr", "batch_size": "optim.batch_size"}
TRAIN = {**COMMON, "net": "net"}
ADAPT = {**COMMON, "checkpoint": "checkpoint", "prior": "prior", "method": "method.name",
         "lam": "method.lam", "kl": "method.kl", "source_modality": "method.source_modality",
         "source_subjects": "method.source_subjects"}
PRIOR = {"method": "method", "cases": "data.cases", "modality": "data.modality", "subjects": "data.subjects",
         "axis": "data.axis", "out": "out", "regressor": "regressor", "checkpoint": "checkpoint",
         "bn_subjects": "bn_subjects", "source_modality": "source_modality", "source_subjects": "source_subjects",
         "ratios": "ratios", "tags": "tags", "min_presence": "min_presence", "device": "device"}
EVALUATE = {"checkpoint": "checkpoint", "cases": "data.cases", "modality": "data.modality",
            "subjects": "data.subjects", "out": "out", "device": "device"}
PREDICT = {"checkpoint": "checkpoint", "out": "out", "device": "device", "adapt": "adapt", "steps": "steps",
           "mode": "mode", "prior": "prior", "lr": "optim.lr", "lam": "method.lam",
           "batch_size": "optim.batch_size", "seed": "seed", "on_distrust": "on_distrust"}
REPORT = {"out": "out", "title": "title"}
NNUNET_FOLD = {"fold": "fold", "checkpoint_name": "checkpoint_name"}
NNUNET = {"nnunet": "nnunet", **NNUNET_FOLD}
ADAPT.update(NNUNET)
EVALUATE.update(NNUNET)
PREDICT.update(NNUNET)
IMPORT_NNUNET = {"folder": "folder", **NNUNET_FOLD, "out": "out"}
SWITCHES = {"resume": "resume", "tags_from_labels": "tags_from_labels", "entropy": "entropy",
            "probabilities": "probabilities", "overwrite": "overwrite", "continue": "resume"}

HELP = {"method": {"prior": "how τe is built: constant, regressor, self, source-mean or source-position",
                   "adapt": "adaent, tent, entropy, adabn (source-free) or adasource, adversarial"},
        "ratios": "constant prior, e.g. 0.9,0.1", "tags": "CSV slice_id,present: slices without the structure "
        "get (1, 0, ...)", "tags_from_labels": "tags from the target labels (experiments)",
        "min_presence": "source-position: tag slices empty where fewer source slices hold the structure",
        "checkpoint": {"prior": "self: the source segmentation model"},
        "adapt": "adapt to each scan first: adaent, tent, entropy or adabn (see --steps, --mode)",
        "steps": "gradient steps per scan (--adapt)", "mode": "episodic (each scan from the source model) "
        "or continual (carry the adapted model on)",
        "on_distrust": "structure (default: the distrusted structures from the source model), source (all) or keep",
        "nnunet": "an nnU-Net v2 result folder (TRAINER__PLANS__CONFIG) as the source model, instead of "
        "--checkpoint", "fold": "the nnU-Net fold to read (default 0)",
        "checkpoint_name": "the fold's checkpoint file (default checkpoint_final.pth)",
        "folder": "an nnU-Net v2 result folder (TRAINER__PLANS__CONFIG)",
        "bn_subjects": "self: subjects whose target slices set its batch-norm statistics "
        "(default: the prior's own slices)",
        "resume": "continue the run in OUT from its last.pt (refused when its settings or inputs differ; "
        "more epochs allowed)",
        "overwrite": "replace the run (or file) already at OUT: its files are deleted first; inputs are never "
        "touched", "continue": "continue a prediction into OUT: inputs whose mask is there already are skipped"}

#: after an interruption, what to do next (default: run the command again)
NEXT_STEP = {"train-source": "rerun it with --resume to continue",
             "train-prior": "rerun it with --resume to continue",
             "adapt": "rerun it with --resume to continue",
             "predict": "rerun it with --continue to skip the masks already written",
             "experiment": "rerun the same command: finished stages are reused, an unfinished training resumes"}
