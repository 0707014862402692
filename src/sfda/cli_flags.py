"""The command line's tables: flag -> config key per command, each command's config class and
example (used by :mod:`sfda.cli` and :mod:`sfda.cli_help`)."""

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
           "batch_size": "optim.batch_size", "seed": "seed", "on_distrust": "on_distrust", "shard": "shard"}
REPORT = {"out": "out", "title": "title"}
NNUNET_FOLD = {"fold": "fold", "checkpoint_name": "checkpoint_name"}
NNUNET = {"nnunet": "nnunet", **NNUNET_FOLD}
ADAPT.update(NNUNET)
EVALUATE.update(NNUNET)
PREDICT.update(NNUNET)
IMPORT_NNUNET = {"folder": "folder", **NNUNET_FOLD, "out": "out"}
SWITCHES = {"resume": "resume", "tags_from_labels": "tags_from_labels", "entropy": "entropy",
            "probabilities": "probabilities", "overwrite": "overwrite", "continue": "resume"}
#: flags that turn a true/false option off (``--no-mirroring`` sets ``mirroring=false``)
NEGATED = {"no_mirroring": "mirroring"}

# Each flag's help is its config key's own description, default and limits (sfda.cli_help).

#: command -> its config class in sfda.config (`sfda config COMMAND` prints it)
CONFIGS = {"train-source": "TrainConfig", "train-prior": "PriorTrainConfig", "prior": "PriorConfig",
           "adapt": "AdaptConfig", "evaluate": "EvaluateConfig", "predict": "PredictConfig",
           "report": "ReportConfig", "import-nnunet": "NnunetImportConfig", "experiment": "ExperimentConfig"}

#: command -> one example, the last lines of its help (the docs' tests run each through the parser)
EXAMPLES = {
    "data index": "sfda data index DATASET_FOLDER -o cases.json --describe",
    "data describe": "sfda data describe cases.json",
    "data phantom": "sfda data phantom phantom/ --subjects 16",
    "train-source": "sfda train-source --cases cases.json --modality opp --subjects A1,B1,C1,D1 --net unet "
                    "--out runs/source optim.lr=1e-3",
    "train-prior": "sfda train-prior --cases cases.json --modality opp --subjects A1,B1,C1,D1 --out runs/prior",
    "prior": "sfda prior --method source-position --cases cases.json --modality inn --source-modality opp "
             "--source-subjects A1,B1,C1,D1 --out tau.csv",
    "adapt": "sfda adapt --method adaent --checkpoint runs/source/selected.pt --prior tau.csv --cases cases.json "
             "--modality inn --out runs/adaent",
    "evaluate": "sfda evaluate --checkpoint runs/adaent/selected.pt --cases cases.json --modality inn "
                "--subjects E1,F1 --out runs/adaent/eval",
    "predict": "sfda predict --checkpoint runs/adaent/selected.pt scan.nii.gz --out masks/ --entropy",
    "report": "sfda report runs/source runs/adaent --out report/",
    "import-nnunet": "sfda import-nnunet --folder RESULTS/Dataset027_Abdomen/nnUNetTrainer__nnUNetPlans__2d "
                     "--fold 0 --out source.pt",
    "experiment": "sfda experiment configs/phantom.yaml --out demo",
    "config": "sfda config adapt > adapt.yaml",
}

#: after an interruption, what to do next (default: run the command again)
NEXT_STEP = {"train-source": "rerun it with --resume to continue",
             "train-prior": "rerun it with --resume to continue",
             "adapt": "rerun it with --resume to continue",
             "predict": "rerun it with --continue to skip the masks already written",
             "experiment": "rerun the same command: finished stages are reused, an unfinished training resumes"}


def split_names(text: str | None, flag: str = "--subjects") -> list[str] | None:
    """``A1, B1`` -> [A1, B1]; a flag given with no names is refused (leave it out to mean all)."""
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        from sfda.errors import SfdaError

        raise SfdaError(f"{flag} lists no subject; name them (e.g. {flag} A1,B1) or leave {flag} out to use all")
    return names
