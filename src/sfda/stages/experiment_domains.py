"""The domains of an experiment, resolved and checked before anything is written.

A direction reads SOURCE->TARGET. In a paired dataset (`data` + `split`: every subject scanned
in every modality, as IVDM3Seg and the phantom) the two names are modalities, and both share the
split. With `domains` (unpaired cohorts: CT at one site, MR at another) the names are domains,
each with its own dataset, channel and split. Either way the experiment works from one merged
case list and one :class:`Domain` per name, so the stages never see the difference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from sfda.config import merge_into
from sfda.data.spatial import check_spatial
from sfda.engine.optim import check_optim
from sfda.errors import SfdaError
from sfda.io.cases import Case, CaseList
from sfda.io.layouts import index_dataset


@dataclass(frozen=True)
class Domain:
    """What the experiment needs of one side of a direction: the channel and the subjects."""

    name: str
    modality: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def parse_direction(text: str) -> tuple[str, str]:
    parts = text.replace("→", "->").split("->")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise SfdaError(f"direction '{text}' must read SOURCE->TARGET, e.g. opp->inn")
    return parts[0].strip(), parts[1].strip()


def direction_names(cfg) -> list[str]:
    """Every name the directions use, in first-seen order (each direction checked)."""
    return list(dict.fromkeys(n for d in cfg.directions for n in parse_direction(d)))


def check_split(split, where: str = "split") -> None:
    """Refuse a split without training or test subjects (how the lists may overlap: ``SplitConfig.check``,
    where the config is parsed)."""
    for name in ("train", "test"):
        if not getattr(split, name):
            raise SfdaError(f"{where}.{name} is empty; list subjects, e.g. {where}.{name}=[A1,B1]")


def check_config(cfg) -> None:
    """Every check that needs no file: directions, the choice of paired/unpaired, the splits."""
    names = direction_names(cfg)
    oracle = merge_into(copy.deepcopy(cfg.source), cfg.oracle, prefix="oracle.")  # its keys, before anything runs
    for method in cfg.adapt.overrides:  # adapt.overrides.<method>'s keys too
        cfg.adapt.for_method(method)
    for where, settings in (("source", cfg.source), ("oracle", oracle)):
        check_optim(settings.optim, f"{where}.optim")
        check_spatial(settings.spatial, cfg.slicing.dims, f"{where}.spatial")
    if not cfg.domains:
        check_split(cfg.split)
        return
    d, s = cfg.data, cfg.split
    if d.root or d.phantom_subjects or s.train or s.val or s.test:
        raise SfdaError("give either `data` + `split` (a paired dataset) or `domains` (unpaired cohorts), "
                        "not both; move the dataset and its split into a domain")
    undefined = [n for n in names if n not in cfg.domains]
    if undefined:
        raise SfdaError(f"direction names domain '{undefined[0]}', which `domains` does not define "
                        f"(defined: {', '.join(cfg.domains)}); fix `directions` or add the domain")
    for name in names:
        dom = cfg.domains[name]
        if not dom.root:
            raise SfdaError(f"domains.{name}.root is required: the folder of that domain's dataset")
        check_split(dom, f"domains.{name}")


def resolve(cfg, paired: CaseList | None = None) -> tuple[CaseList, dict[str, Domain]]:
    """The merged case list and one :class:`Domain` per name the directions use.
    ``paired``: the already indexed paired dataset (``data`` + ``split``)."""
    if not cfg.domains:
        s = cfg.split
        _check_names(paired, [*s.train, *s.val, *s.test], "split", "data.root")
        for m in direction_names(cfg):
            if m not in paired.modalities:
                raise SfdaError(f"direction modality '{m}' is not in the dataset "
                                f"(modalities: {', '.join(paired.modalities)}); fix `directions`")
        return paired, {m: Domain(m, m, tuple(s.train), tuple(s.val), tuple(s.test)) for m in direction_names(cfg)}
    lists, domains = {}, {}
    for name in direction_names(cfg):
        dom = cfg.domains[name]
        cl = index_dataset(dom.root, dom.layout, dom.pattern or None, dom.label_pattern or None)
        _check_names(cl, [*dom.train, *dom.val, *dom.test], f"domains.{name}", f"domains.{name}.root")
        lists[name] = cl
        domains[name] = Domain(name, _modality(cl, dom.modality, name), tuple(dom.train), tuple(dom.val),
                               tuple(dom.test))
    return merge_case_lists(lists), domains


def _check_names(cl: CaseList, names: list[str], where: str, root_key: str) -> None:
    known = list(dict.fromkeys(c.subject for c in cl.cases))
    unknown = [n for n in names if n not in known]
    if unknown:
        shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        raise SfdaError(f"{where} names subject(s) {', '.join(unknown)}, not in the dataset at {cl.root or root_key} "
                        f"(its subjects: {shown}); fix the names")


def _modality(cl: CaseList, wanted: str, name: str) -> str:
    if wanted:
        if wanted not in cl.modalities:
            raise SfdaError(f"domains.{name}.modality '{wanted}' is not in its dataset "
                            f"(channels: {', '.join(cl.modalities)}); fix domains.{name}.modality")
        return wanted
    if len(cl.modalities) != 1:
        raise SfdaError(f"domain '{name}' has channels {', '.join(cl.modalities)}; "
                        f"choose one with domains.{name}.modality")
    return cl.modalities[0]


def merge_case_lists(lists: dict[str, CaseList]) -> CaseList:
    """One case list over every domain's cases; subjects must be unique across domains and the
    label names the same (a source model's class k must be the target's class k)."""
    cases: list[Case] = []
    owner: dict[str, str] = {}
    seen: set[str] = set()
    first_name, first = next(iter(lists.items()))
    for name, cl in lists.items():
        if cl.label_names != first.label_names:
            raise SfdaError(f"domains '{first_name}' and '{name}' name their labels differently "
                            f"({first.label_names} vs {cl.label_names}); relabel one so class k means "
                            "the same structure in both")
        for case in cl.cases:
            if repr(case) in seen:  # two domains over one dataset (e.g. two of its channels)
                continue
            seen.add(repr(case))
            if owner.setdefault(case.subject, name) != name:
                raise SfdaError(f"subject '{case.subject}' is in domains '{owner[case.subject]}' and '{name}'; "
                                "rename the subjects of one dataset so each name means one person")
            cases.append(case)
    modalities = list(dict.fromkeys(m for cl in lists.values() for m in cl.modalities))
    return CaseList(cases=cases, modalities=modalities, label_names=list(first.label_names), layout="domains",
                    root=",".join(cl.root for cl in lists.values()))
