"""The ``sfda`` command. It parses, builds the stage's typed config, calls the stage
(:mod:`sfda.stages`) and prints.

Every config-driven command takes ``--config FILE``, its flags (each sets one
config key) and dotted ``key=value`` overrides, in that order of precedence.
Heavy imports (torch, nibabel) happen inside the handlers so ``sfda --help``
answers at once. Errors meant for users (:class:`sfda.errors.SfdaError`) print
one line and exit 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sfda.cli_flags import (ADAPT, EVALUATE, IMPORT_NNUNET, NEGATED, NEXT_STEP, PREDICT, PRIOR, REPORT, SWITCHES, TRAIN,
                            split_names)
from sfda.cli_help import VersionAction, add_config_parser, config_class, epilog, flag_help, switch_help


def _add_config_args(p: argparse.ArgumentParser, command: str, flags: dict[str, str], switches: tuple[str, ...] = (),
                     overrides: bool = True) -> None:
    p.add_argument("--config", metavar="FILE", help="a YAML config file (start one with `sfda config "
                   f"{command}`); flags and key=value overrides win over it")
    for name, key in flags.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=flag_help(command, key))
    for name in switches:
        p.add_argument("--" + name.replace("_", "-"), dest=name, action="store_true", help=switch_help(command, name))
    if overrides:
        p.add_argument("overrides", nargs="*", metavar="key=value",
                       help=f"dotted config overrides, e.g. optim.lr=1e-4 (every key: `sfda config {command}`)")
    else:  # its positional list takes every word: other keys come from --config FILE
        p.set_defaults(overrides=[])


def _overrides(args, flags: dict[str, str]) -> list[str]:
    for name in flags:
        if name.endswith("subjects") and getattr(args, name) is not None:
            split_names(getattr(args, name), "--" + name.replace("_", "-"))
    out = [f"{key}={getattr(args, name)}" for name, key in flags.items() if getattr(args, name) is not None]
    out += [f"{key}={str(name not in NEGATED).lower()}" for name, key in {**SWITCHES, **NEGATED}.items()
            if getattr(args, name, False)]
    return out + list(args.overrides)


def _cfg(args, flags, **lists):
    """The command's config: file, then flags, then overrides; ``lists`` set list options directly
    (paths may hold commas)."""
    from sfda.config import load_config

    cfg = load_config(config_class(args.command), args.config, _overrides(args, flags))
    for key, value in lists.items():
        if value:
            setattr(cfg, key, [str(v) for v in value])
    return cfg


def cmd_index(args) -> int:
    from sfda.stages.data import describe_cases, index_cases

    cl = index_cases(args.root, args.out, args.layout, args.pattern, args.label_pattern, args.overwrite)
    print(f"wrote {args.out}: {len(cl.cases)} cases ({cl.layout} layout)")
    if args.describe:
        print(describe_cases(args.out))
    return 0


def cmd_describe(args) -> int:
    from sfda.stages.data import describe_cases

    print(describe_cases(args.cases))
    return 0


def cmd_phantom(args) -> int:
    from sfda.stages.data import write_phantom

    cl = write_phantom(args.out, subjects=args.subjects, seed=args.seed)
    print(f"wrote a phantom of {len(cl.cases)} subjects ({', '.join(cl.modalities)}) to {args.out}")
    return 0


def cmd_train_source(args) -> int:
    from sfda.stages.train import train_source

    _print_last(train_source(_cfg(args, TRAIN)))
    return 0


def cmd_train_prior(args) -> int:
    from sfda.stages.train import train_prior

    cfg = _cfg(args, TRAIN)
    row = train_prior(cfg)
    if "val_mae" in row:
        print(f"validation MAE of class ratios: {row['val_mae']:.4f} (all slices), "
              f"{row['val_mae_present']:.4f} (slices with the structure)")
    print(f"regressor to use: {cfg.out}/selected.pt")
    return 0


def _print_last(out) -> None:
    """The run's last figures and, last, the one model file to use (``done.json`` names it)."""
    from sfda.stages.report import read_log

    log = read_log(Path(out))
    if log and "val_dice" in log[-1]:
        print(f"last epoch {log[-1]['epoch']}: validation 3D Dice {log[-1]['val_dice']:.4f} "
              "(validation labels: for comparison, they choose nothing)")
    done = json.loads((Path(out) / "done.json").read_text())
    trust = done.get("trust") or {}
    said = {"source": " (the trust check's fall-back: the source model; the adapted weights stay in last.pt)",
            "structures": " (the trust check's fall-back for "
                          f"{', '.join(trust.get('fallback_structures') or [])}; see trust.json)"}
    print(f"model to use: {out}/{done['model']}{said.get(trust.get('fallback'), '')}")


def cmd_prior(args) -> int:
    from sfda.stages.prior import make_prior

    print(f"wrote {make_prior(_cfg(args, PRIOR))}")
    return 0


def cmd_adapt(args) -> int:
    from sfda.stages.adapt_folds import adapt_all

    for out in adapt_all(_cfg(args, ADAPT)):  # one run; or, given several nnU-Net folds, one per fold
        _print_last(out)
    return 0


def cmd_evaluate(args) -> int:
    from sfda.stages.evaluate import evaluate, summary_table

    cfg = _cfg(args, EVALUATE)
    print(summary_table(evaluate(cfg)["summary"]))
    print(f"wrote {cfg.out}/metrics.json and metrics.csv")
    return 0


def cmd_predict(args) -> int:
    from sfda.engine.distributed import is_main
    from sfda.stages.predict import predict

    cfg = _cfg(args, PREDICT, inputs=args.inputs)
    written = predict(cfg)
    if is_main():  # under torchrun one summary line: rank 0 learns every rank's masks
        print(f"wrote {len(written)} mask{'' if len(written) == 1 else 's'} to {cfg.out}"
              + (f" (share {cfg.shard})" if cfg.shard else ""))
    return 0


def cmd_import_nnunet(args) -> int:
    from sfda.stages.nnunet import import_nnunet

    print(f"wrote {import_nnunet(_cfg(args, IMPORT_NNUNET))}")
    return 0


def cmd_report(args) -> int:
    from sfda.stages.report import report

    print(f"report: {report(_cfg(args, REPORT, runs=args.runs))}")
    return 0


def cmd_experiment(args) -> int:
    from sfda.config import load_config
    from sfda.stages.experiment import run_experiment

    cfg = load_config(config_class("experiment"), args.config, args.overrides)
    run_experiment(cfg, args.out)
    print((Path(args.out) / "results.md").read_text())
    print(f"results: {args.out}/results.json; reports: {args.out}/<direction>/seed<k>/report/report.md")
    return 0


def _parser(sub, name: str, text: str, description: str = "") -> argparse.ArgumentParser:
    """A command's parser; its help ends with the command's example, kept on one line."""
    import textwrap

    description = textwrap.fill(description or f"{text[:1].upper()}{text[1:]}.", 80)
    return sub.add_parser(name.split()[-1], help=text, description=description, epilog=epilog(name),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _data_parsers(sub) -> None:
    data = sub.add_parser("data", help="index, describe or generate datasets")
    data = data.add_subparsers(dest="data_cmd", required=True)
    p = _parser(data, "data index", "scan a dataset folder into a case list")
    p.add_argument("root", help="the dataset folder")
    p.add_argument("-o", "--out", required=True, help="the case list to write (JSON)")
    p.add_argument("--layout", default="auto", help="auto, ivdm3seg, ivdm3seg-crops, nnunet or pattern "
                   "[default %(default)s]")
    p.add_argument("--pattern", help="pattern layout: the images, e.g. {subject}/{subject}_{modality}.nii.gz")
    p.add_argument("--label-pattern", help="pattern layout: the labels, e.g. {subject}/{subject}_label.nii.gz")
    p.add_argument("--describe", action="store_true", help="also print the table of `sfda data describe`")
    p.add_argument("--overwrite", action="store_true", help="replace an existing case list at --out")
    p.set_defaults(func=cmd_index)
    p = _parser(data, "data describe", "print subjects, modalities, shapes, spacings, labels")
    p.add_argument("cases", help="a case list from `sfda data index`")
    p.set_defaults(func=cmd_describe)
    p = _parser(data, "data phantom", "write the synthetic spine phantom (wat/inn)")
    p.add_argument("out", help="the folder to write")
    p.add_argument("--subjects", type=int, default=8, help="how many subjects [default %(default)s; >= 1]")
    p.add_argument("--seed", type=int, default=0, help="the generator's seed [default %(default)s; >= 0]")
    p.set_defaults(func=cmd_phantom)


#: command -> (help, flags, switches, handler)
STAGES = {
    "train-source": ("supervised training (source model, or Oracle on target labels)", TRAIN,
                     ("resume", "overwrite"), cmd_train_source),
    "train-prior": ("train the class-ratio regressor on source slices", TRAIN, ("resume", "overwrite"),
                    cmd_train_prior),
    "prior": ("write the per-slice prior table τe", PRIOR, ("tags_from_labels", "overwrite"), cmd_prior),
    "adapt": ("adapt a source checkpoint to the target domain", ADAPT, ("resume", "overwrite"), cmd_adapt),
    "evaluate": ("3D metrics per subject", EVALUATE, ("overwrite", "no_mirroring"), cmd_evaluate),
    "predict": ("write masks in the inputs' own geometry", PREDICT,
                ("entropy", "probabilities", "continue", "overwrite", "no_mirroring"), cmd_predict),
    "report": ("table, curves and mask grid over evaluated runs", REPORT, ("overwrite",), cmd_report),
    "import-nnunet": ("an nnU-Net v2 result folder as an sfda source checkpoint", IMPORT_NNUNET, ("overwrite",),
                      cmd_import_nnunet),
}
#: what a command without key=value overrides takes instead
NO_OVERRIDES = {"predict": "Other keys (method.*, optim.*) come from --config FILE; key=value words are not read "
                "(they would be taken for inputs).", "report": "Other keys come from --config FILE."}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sfda", description="Source-free domain adaptation for segmentation "
                                     "(Bateson et al., MICCAI 2020).", epilog="`sfda COMMAND --help` says more; "
                                     "`sfda config COMMAND` prints every config key of a command.")
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _data_parsers(sub)
    for name, (text, flags, switches, handler) in STAGES.items():
        extra = NO_OVERRIDES.get(name, "Each flag sets one config key; key=value overrides set any other.")
        p = _parser(sub, name, text, description=f"{text[:1].upper()}{text[1:]}. {extra}")
        if name == "predict":
            p.add_argument("inputs", nargs="+", help="volume files, folders or a case list")
        if name == "report":
            p.add_argument("runs", nargs="+", help="run folders (each with eval/ and log.jsonl)")
        _add_config_args(p, name, flags, switches, overrides=name not in NO_OVERRIDES)
        p.set_defaults(func=handler)
    p = _parser(sub, "experiment", "the full comparison from a config")
    p.add_argument("config", help="an experiment config (configs/*.yaml; every key: `sfda config experiment`)")
    p.add_argument("--out", required=True, help="the output folder")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. seeds=[0,1]")
    p.set_defaults(func=cmd_experiment)
    add_config_parser(sub)
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
    from sfda.errors import SfdaError, Terminated, on_sigterm

    command = args.command if args.command != "data" else f"data {args.data_cmd}"
    next_step = NEXT_STEP.get(args.command, "run the command again")
    finished = False
    try:
        with on_sigterm():
            rc = args.func(args)
        finished = True
        return rc
    except SfdaError as exc:
        if args.debug:
            raise
        print(f"sfda: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write the stage did not expect to fail: a special or vanished path
        if args.debug:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"sfda: error: {command}: cannot use{where}: {exc.strerror or exc}; choose another place",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sfda: {command} interrupted; {next_step}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"sfda: {command} terminated (SIGTERM); {next_step}", file=sys.stderr)
        return 143
    finally:
        if "torch.distributed" in sys.modules:  # a torchrun rank: leave its process group before exiting
            from sfda.engine.distributed import leave

            leave(finished)
