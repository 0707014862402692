"""The ``sfda`` command. It parses, calls :mod:`sfda.pipeline` and friends, and prints.

Heavy imports (torch, nibabel) happen inside the handlers so ``sfda --help``
answers at once. Errors meant for users (:class:`sfda.errors.SfdaError`) print
one line and exit 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

# Flag -> config key, shared by the training-like commands.
COMMON = {"cases": "data.cases", "modality": "data.modality", "subjects": "data.subjects",
          "val_subjects": "data.val_subjects", "axis": "data.axis", "out": "out", "seed": "seed",
          "device": "device", "epochs": "optim.epochs", "lr": "optim.lr", "batch_size": "optim.batch_size"}
TRAIN = {**COMMON, "net": "net"}
ADAPT = {**COMMON, "checkpoint": "checkpoint", "prior": "prior", "method": "method.name",
         "lam": "method.lam", "kl": "method.kl", "source_modality": "method.source_modality",
         "source_subjects": "method.source_subjects"}


def _add_config_args(p: argparse.ArgumentParser, flags: dict[str, str]) -> None:
    p.add_argument("--config", help="YAML config file; flags and key=value overrides win over it")
    for name, key in flags.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=f"sets {key}")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. optim.lr=1e-4")


def _overrides(args, flags: dict[str, str]) -> list[str]:
    for name in flags:
        if name.endswith("subjects") and getattr(args, name) is not None:
            _split(getattr(args, name), "--" + name.replace("_", "-"))
    out = [f"{key}={getattr(args, name)}" for name, key in flags.items() if getattr(args, name) is not None]
    if getattr(args, "resume", False):
        out.append("resume=true")
    return out + list(args.overrides)


def _cfg(cls, args, flags):
    from sfda.config import load_config

    return load_config(cls, args.config, _overrides(args, flags))


def _split(text: str | None, flag: str = "--subjects") -> list[str] | None:
    """``A1,B1`` -> [A1, B1]; a flag given with no names is refused (leave it out to mean all)."""
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        from sfda.errors import SfdaError

        raise SfdaError(f"{flag} lists no subject; name them (e.g. {flag} A1,B1) or leave {flag} out to use all")
    return names


def cmd_index(args) -> int:
    from sfda.io.cases import save_cases
    from sfda.io.layouts import describe, index_dataset

    cl = index_dataset(args.root, args.layout, args.pattern, args.label_pattern)
    save_cases(args.out, cl)
    print(f"wrote {args.out}: {len(cl.cases)} cases ({cl.layout} layout)")
    if args.describe:
        print(describe(cl))
    return 0


def cmd_describe(args) -> int:
    from sfda.io.cases import load_cases
    from sfda.io.layouts import describe

    print(describe(load_cases(args.cases)))
    return 0


def cmd_phantom(args) -> int:
    from sfda.data.phantom import make_phantom

    cl = make_phantom(args.out, n_subjects=args.subjects, seed=args.seed)
    print(f"wrote a phantom of {len(cl.cases)} subjects ({', '.join(cl.modalities)}) to {args.out}")
    return 0


def cmd_train_source(args) -> int:
    from sfda.config import TrainConfig
    from sfda.pipeline import train_source

    out = train_source(_cfg(TrainConfig, args, TRAIN))
    _print_last(out)
    return 0


def cmd_train_prior(args) -> int:
    from sfda.config import PriorTrainConfig
    from sfda.pipeline import train_prior

    cfg = _cfg(PriorTrainConfig, args, TRAIN)
    row = train_prior(cfg)
    if "val_mae" in row:
        print(f"validation MAE of class ratios: {row['val_mae']:.4f} (all slices), "
              f"{row['val_mae_present']:.4f} (slices with the structure)")
    print(f"regressor: {cfg.out}/last.pt")
    return 0


def _print_last(out) -> None:
    from sfda.reporting import read_log

    log = read_log(out)
    if log and "val_dice" in log[-1]:
        print(f"last epoch {log[-1]['epoch']}: validation 3D Dice {log[-1]['val_dice']:.4f}")
    print(f"checkpoint: {out}/last.pt")


def cmd_prior(args) -> int:
    from sfda.config import DataConfig
    from sfda.pipeline import make_prior

    ratios = [float(r) for r in args.ratios.split(",")] if args.ratios else None
    path = make_prior(method=args.method, cases=args.cases, modality=args.modality,
                      subjects=_split(args.subjects), out=args.out, regressor=args.regressor or "",
                      source_modality=args.source_modality or "",
                      source_subjects=_split(args.source_subjects, "--source-subjects"),
                      ratios=ratios, tags=args.tags or "", tags_from_labels=args.tags_from_labels,
                      min_presence=args.min_presence, checkpoint=args.checkpoint or "",
                      bn_subjects=_split(args.bn_subjects, "--bn-subjects"),
                      data=DataConfig(axis=args.axis))
    print(f"wrote {path}")
    return 0


def cmd_adapt(args) -> int:
    from sfda.config import AdaptConfig
    from sfda.pipeline import adapt

    out = adapt(_cfg(AdaptConfig, args, ADAPT))
    _print_last(out)
    return 0


def cmd_evaluate(args) -> int:
    from sfda.evaluate import evaluate, summary_table

    res = evaluate(args.checkpoint, args.cases, args.modality, _split(args.subjects), args.out, device=args.device)
    print(summary_table(res["summary"]))
    print(f"wrote {args.out}/metrics.json and metrics.csv")
    return 0


def cmd_predict(args) -> int:
    from sfda.predict import predict

    written = predict(args.checkpoint, args.inputs, args.out, entropy=args.entropy,
                      probabilities=args.probabilities, device=args.device)
    print(f"wrote {len(written)} masks to {args.out}")
    return 0


def cmd_report(args) -> int:
    from sfda.reporting import report

    path = report(args.runs, args.out)
    print(f"report: {path}")
    return 0


def cmd_experiment(args) -> int:
    from sfda.config import load_config
    from sfda.experiment import ExperimentConfig, run_experiment

    cfg = load_config(ExperimentConfig, args.config, args.overrides)
    run_experiment(cfg, args.out)
    print((__import__("pathlib").Path(args.out) / "results.md").read_text())
    print(f"results: {args.out}/results.json; reports: {args.out}/<direction>/seed<k>/report/report.md")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sfda", description="Source-free domain adaptation for segmentation "
                                     "(Bateson et al., MICCAI 2020).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="index, describe or generate datasets")
    data = data.add_subparsers(dest="data_cmd", required=True)
    p = data.add_parser("index", help="scan a dataset folder into a case list")
    p.add_argument("root")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--layout", default="auto", help="auto, ivdm3seg, ivdm3seg-crops, nnunet or pattern")
    p.add_argument("--pattern", help="e.g. {subject}/{subject}_{modality}.nii.gz")
    p.add_argument("--label-pattern", help="e.g. {subject}/{subject}_label.nii.gz")
    p.add_argument("--describe", action="store_true", help="also print the table of `data describe`")
    p.set_defaults(func=cmd_index)
    p = data.add_parser("describe", help="print subjects, modalities, shapes, spacings, labels")
    p.add_argument("cases")
    p.set_defaults(func=cmd_describe)
    p = data.add_parser("phantom", help="write the synthetic spine phantom (wat/inn)")
    p.add_argument("out")
    p.add_argument("--subjects", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("train-source", help="supervised training (source model, or Oracle on target labels)")
    _add_config_args(p, TRAIN)
    p.set_defaults(func=cmd_train_source)
    p = sub.add_parser("train-prior", help="train the class-ratio regressor on source slices")
    _add_config_args(p, TRAIN)
    p.set_defaults(func=cmd_train_prior)

    p = sub.add_parser("prior", help="write the per-slice prior table τe")
    p.add_argument("--method", required=True, help="regressor, self, source-mean, source-position or constant")
    p.add_argument("--cases", required=True)
    p.add_argument("--modality", required=True)
    p.add_argument("--subjects")
    p.add_argument("--out", required=True)
    p.add_argument("--regressor")
    p.add_argument("--checkpoint", help="self: the source segmentation model")
    p.add_argument("--bn-subjects", help="self: subjects whose target slices set its batch-norm statistics "
                   "(default: the prior's own slices)")
    p.add_argument("--source-modality")
    p.add_argument("--source-subjects")
    p.add_argument("--ratios", help="constant prior, e.g. 0.9,0.1")
    p.add_argument("--tags", help="CSV slice_id,present: slices without the structure get (1, 0, ...)")
    p.add_argument("--tags-from-labels", action="store_true", help="tags from the target labels (experiments)")
    p.add_argument("--min-presence", type=float, default=0.0,
                   help="source-position: tag slices empty where fewer source slices hold the structure")
    p.add_argument("--axis", type=int, default=0)
    p.set_defaults(func=cmd_prior)

    p = sub.add_parser("adapt", help="adapt a source checkpoint to the target domain")
    _add_config_args(p, ADAPT)
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("evaluate", help="3D metrics per subject")
    for flag in ("checkpoint", "cases", "modality", "out"):
        p.add_argument("--" + flag, required=True)
    p.add_argument("--subjects")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="write masks in the inputs' own geometry")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("inputs", nargs="+", help="volume files, folders or a case list")
    p.add_argument("--out", required=True)
    p.add_argument("--entropy", action="store_true")
    p.add_argument("--probabilities", action="store_true")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("report", help="table, curves and mask grid over evaluated runs")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("experiment", help="the full comparison from a config")
    p.add_argument("config")
    p.add_argument("--out", required=True)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_experiment)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also stand between flags; argparse leaves those in `extra`.
    stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    from sfda.errors import SfdaError

    try:
        return args.func(args)
    except SfdaError as exc:
        if args.debug:
            raise
        print(f"sfda: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sfda: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
