"""The rules that join a section's fields, checked where the config is parsed (:func:`sfda.config.core.load_config`
calls each section's ``check``), so a stage never starts on them: a subject split and a resampling choice."""

from __future__ import annotations

from sfda.errors import SfdaError


def check_split_lists(train, val=(), test=(), names=("train", "val", "test")) -> None:
    """The one rule for subject lists: none lists a subject twice, training subjects are neither
    validated nor tested on, validation subjects are not tested on (their labels choose the "best by
    validation labels" column: on test subjects it would be chosen on the labels it is scored with).
    ``names``: how the three lists are called where the user wrote them."""
    lists = dict(zip(names, (list(train), list(val), list(test))))
    for name, items in lists.items():
        twice = sorted({s for s in items if items.count(s) > 1})
        if twice:
            raise SfdaError(f"{name} lists {twice} more than once; list each subject once")
    t, v, s = (set(x) for x in lists.values())
    if t & (v | s):
        raise SfdaError(f"subjects {sorted(t & (v | s))} are in {names[0]} and in {'/'.join(names[1:])}; "
                        "train on other subjects than you validate or test on")
    if v & s:
        raise SfdaError(f"subjects {sorted(v & s)} are in {names[1]} and {names[2]}; validate on other subjects, "
                        f"or leave {names[1]} empty")


def check_resample(size, spacing, where: str = "slicing", dims: int = 2) -> None:
    """Refuse a malformed choice where it is parsed: two values each (three with ``dims`` 3: one per
    volume axis), and not both at once."""
    what = "rows, columns of a slice" if dims == 2 else "one per axis of the volume, with slicing.dims 3"
    for name, value in (("size", size), ("spacing", spacing)):
        if value and len(value) != dims:
            raise SfdaError(f"{where}.{name} takes {('two', 'three')[dims - 2]} values ({what}), got {list(value)}; "
                            f"e.g. {where}.{name}=[{','.join(['96'] * dims)}]")
    if size and spacing:
        raise SfdaError(f"{where}.size and {where}.spacing are both set; choose one (a fixed slice size, "
                        "or a fixed pixel spacing)")
