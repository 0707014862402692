"""When a finished stage of ``sfda experiment`` may be reused: only while its own config and
the content of its inputs (case list, upstream checkpoint, prior table) are unchanged.

A stage's folder gets ``stage.json`` (the fingerprint, the config and the inputs'
digests) before it runs, and its ``done.json`` the same fingerprint when it ends.
A rerun compares them and says what changed. ``stage.json`` also records the environment the run
computed in (:func:`sfda.engine.environment.environment`): not part of the fingerprint, since a run
made elsewhere computed the same thing up to float round-off.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sfda.config import config_to_dict
from sfda.engine.environment import differences as environment_changes
from sfda.engine.environment import environment
from sfda.io.atomic import write_json
from sfda.progress import say

#: the run's record in its folder
RECORD = "stage.json"
#: keys that say where a stage writes, whether it resumes or replaces a run, not what it computes
_IGNORED = ("out", "resume", "overwrite", "shard")  # shard: which share of the run a task writes
#: options added after runs were made, left out of the fingerprint while at these defaults,
#: so a run made before they existed (which computed the same thing) is still reused
_ADDED = {"data.size": [], "data.spacing": [], "data.dims": 2, "optim.nesterov": False, "loss": "ce",
          "oversample_fg": 0.0, "spatial.rotate": 0.0, "spatial.rotate_deg": 180.0, "spatial.scale": 0.0,
          "spatial.scale_range": [0.7, 1.4], "spatial.elastic": 0.0, "spatial.elastic_spacing": 32.0,
          "spatial.elastic_magnitude": [0.0, 4.0], "spatial.mirror_axes": [], "keep_epochs": False,
          "mirroring": True}


def digest(path: str | Path) -> str:
    """A short hash of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


class Stage:
    """One stage's identity: its config (less where it writes) and its inputs' content."""

    def __init__(self, cfg, inputs: list[str | Path], root: str | Path = "", command: str = ""):
        """``root``: the experiment's folder; paths inside it are recorded relative to it, so a
        moved or copied experiment folder is still recognised. ``command``: the `sfda` command
        that runs it, named in refusals."""
        self.command = command
        def rel(v):
            return v.replace(str(root), "<out>", 1) if root and isinstance(v, str) else v

        self.config = {k: rel(v) for k, v in _flat(config_to_dict(cfg)).items()
                       if k not in _IGNORED and not (k in _ADDED and v == _ADDED[k])}
        # a missing input is recorded as such: the stage itself then says what is missing and why
        self.inputs = {rel(str(p)): digest(p) if Path(p).is_file() else "missing" for p in inputs}
        blob = json.dumps({"config": self.config, "inputs": self.inputs}, sort_keys=True, default=str)
        self.fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]

    def why_stale(self, folder: Path, marker: str = "done.json") -> str | None:
        """None when ``folder`` holds this stage finished; else why it must run."""
        done = folder / marker
        if not done.exists():
            return "not run yet"
        if json.loads(done.read_text()).get("fingerprint") == self.fingerprint:
            return None
        return self._changes(folder)

    def _changes(self, folder: Path) -> str:
        if not (folder / RECORD).exists():
            return "it finished before sfda kept fingerprints, so its config and inputs cannot be checked"
        return "; ".join(self.differences(folder)[:6]) or "its config or inputs changed"

    def differences(self, folder: Path, allowed: tuple[str, ...] = ()) -> list[str]:
        """What differs between this stage and the run recorded in ``folder`` (config keys, with the
        old and new value, and changed inputs), less the ``allowed`` keys."""
        old = json.loads((folder / RECORD).read_text())
        keys = sorted(k for k in set(old["config"]) | set(self.config)
                      if old["config"].get(k) != self.config.get(k) and k not in allowed)
        said = [f"{k} {old['config'].get(k)!r} -> {self.config.get(k)!r}" for k in keys]
        return said + [f"input {p} changed" for p in self.inputs if old["inputs"].get(p) != self.inputs[p]]

    def can_resume(self, folder: Path) -> bool:
        """An unfinished run in ``folder`` was started with this very config and inputs."""
        path = folder / RECORD
        return path.exists() and json.loads(path.read_text()).get("fingerprint") == self.fingerprint

    def start(self, folder: Path, marker: str = "done.json", resume: bool = False) -> None:
        """Before running: forget a stale ``done.json`` and record what is about to run, and where.
        ``resume``: the run goes on from its last epoch; one started in another environment is said,
        and its first environment kept (``started_in``)."""
        (folder / marker).unlink(missing_ok=True)
        env = environment()
        earlier = self._started_in(folder, env) if resume else None
        write_json(folder / RECORD, {"fingerprint": self.fingerprint, "config": self.config, "inputs": self.inputs,
                                     **({"command": self.command} if self.command else {}), "environment": env,
                                     **({"started_in": earlier} if earlier else {})})

    def _started_in(self, folder: Path, env: dict) -> dict | None:
        """The environment the run resumed in ``folder`` (the same run: the claim checked it) started
        in, once any part of it ran elsewhere; a change from its last environment is said."""
        path = folder / RECORD
        record = json.loads(path.read_text()) if path.exists() else {}
        last = record.get("environment")
        if not last:  # a run from before sfda kept environments
            return None
        if last != env:
            say(f"note: {folder} ran so far with {'; '.join(environment_changes(last, env))}: the epochs from "
                "here compute with other float round-off, so the run will not repeat one made without a pause")
        return record.get("started_in") or (last if last != env else None)

    def finish(self, folder: Path, marker: str = "done.json") -> None:
        """After running: stamp the fingerprint into the stage's ``done.json``."""
        done = folder / marker
        record = json.loads(done.read_text()) if done.exists() else {}
        write_json(done, {**record, "fingerprint": self.fingerprint})
