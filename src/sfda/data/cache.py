"""The on-disk cache of built sample arrays: ``.npy`` files in a folder named by a key of the files
(their modification times and sizes) and the parameters that shaped them; copied into RAM on reload."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from sfda.io.atomic import atomic_path, write_json
from sfda.io.cases import Case, channel_files


def cache_key(cases: list[Case], modality: str, axis: int, hw, clips: list[tuple], with_labels: bool, resample,
              dims: int = 2, preprocess: str = "") -> str:
    items = []
    for c in cases:
        for p in (*channel_files(c, modality), c.label if with_labels else None):
            if p:
                st = os.stat(p)
                items.append([p, st.st_mtime_ns, st.st_size])
    clip = list(clips[0]) if len(clips) == 1 else [list(c) for c in clips]  # one channel: the keys of before
    blob = json.dumps([items, modality, axis, list(hw), clip, with_labels, 2,
                       *([list(map(list, resample))] if any(resample) else []),
                       *(["3d"] if dims == 3 else []), *([preprocess] if preprocess else [])]).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def cached_arrays(cache_dir: str | None, key: str, build):
    """The arrays cached under ``key`` in ``cache_dir``, else ``build()``'s (saved there when a folder is given)."""
    cached = _load_cache(cache_dir, key) if cache_dir else None
    if cached is None:
        cached = build()
        if cache_dir:
            _save_cache(cache_dir, key, cached)
    return cached


def cached_boxes(cache_dir: str | None, key: str, compute) -> dict[str, tuple[int, ...]]:
    """Each case's non-zero box on the network's grid (nnU-Net's preprocessing) cached under ``key``, else
    ``compute()``'s ({case id: grid}), so that a cache hit reads no image to find the boxes."""
    path = Path(cache_dir) / f"boxes-{key}.json" if cache_dir else None
    if path is not None and path.exists():
        return {case: tuple(grid) for case, grid in json.loads(path.read_text()).items()}
    boxes = compute()
    if path is not None:
        write_json(path, {case: list(grid) for case, grid in boxes.items()})
    return boxes


_NAMES = ("images", "labels", "case_index", "slice_index")


def _load_cache(cache_dir: str, key: str):
    folder = Path(cache_dir) / key
    if not (folder / "done.json").exists():
        return None
    out = []
    for name in _NAMES:
        path = folder / f"{name}.npy"
        out.append(np.load(path, mmap_mode="r") if path.exists() else None)
    # Copy into RAM once: batches index these arrays randomly every step.
    # (np.ascontiguousarray would return the read-only memmap itself: it is already contiguous.)
    return tuple(None if a is None else np.array(a) for a in out)


def _save_cache(cache_dir: str, key: str, arrays) -> None:
    folder = Path(cache_dir) / key
    for name, array in zip(_NAMES, arrays):
        if array is not None:
            with atomic_path(folder / f"{name}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, array)
    write_json(folder / "done.json", {"arrays": [n for n, a in zip(_NAMES, arrays) if a is not None]})
