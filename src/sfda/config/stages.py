"""One typed config per stage. Each option is declared here once, with its default and limits.

A stage's config is its *settings* (what to do: network, optimiser, method...) plus
:class:`RunConfig` (seed, device, output folder, resume) and its inputs. ``sfda experiment``
reuses the settings classes for its sections and fills the inputs itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sfda.config.core import opt
from sfda.config.method import MethodConfig
from sfda.config.methods import per_scan_methods
from sfda.config.nnunet import NnunetFold, NnunetSource
from sfda.config.rules import check_resample, check_split_lists
from sfda.config.spatial import SpatialConfig

#: the ways `selected.pt` is chosen (sfda.engine.selection reads them from here)
SELECT_CRITERIA = ("last", "average", "holdout_kl", "holdout_objective", "holdout_entropy")


@dataclass
class SlicingConfig:
    """How volumes become the network's samples (2D slices, or whole 3D volumes), and their
    intensity normalisation."""

    # 2: the network sees slices along ``axis``; 3: each case is one sample, a whole volume
    # (sfda.data.volumeset; a 3D network, e.g. monai.UNet, which then gets spatial_dims 3).
    dims: int = opt(2, choices=(2, 3))
    # The array axis slices are taken along (file voxel order); -1: the axis of the coarsest voxel
    # spacing (the median over the training cases), as nnU-Net; the checkpoint stores the number.
    axis: int = opt(-1, choices=(-1, 0, 1, 2))
    pad_multiple: int = opt(16, low=1)  # samples are centre-padded to a multiple of this
    # Percentile clip before the z-score (sfda.data.normalize): the lower percentile.
    clip_low: float = opt(0.5, low=0, high=100)
    clip_high: float = opt(99.5, low=0, high=100)  # the upper percentile of the clip
    # In-plane resampling before the network (sfda.data.resample): a fixed slice size [H, W], or a
    # fixed pixel spacing [mm, mm]; empty: each scan's own grid. Images linear, labels nearest;
    # predictions go back to each scan's own grid (probabilities resampled, then the argmax).
    # With dims 3, three values: the volume's size or voxel spacing along each of its axes.
    size: list[int] = opt([], low=1)
    spacing: list[float] = opt([], above=0)  # a fixed pixel (voxel) spacing in mm instead of a size

    def __post_init__(self):
        self.check()

    def check(self, prefix: str = "slicing.") -> None:
        """Two values for size or spacing (three with dims 3), not both."""
        check_resample(self.size, self.spacing, where=prefix.rstrip("."), dims=self.dims)


@dataclass
class DataConfig(SlicingConfig):
    """Which images a stage reads (a case list from `sfda data index`) and how they are sliced."""

    cases: str = ""  # the case list (JSON) written by `sfda data index`
    modality: str = ""  # the modality (channel) to read, e.g. inn; a model's several channels joined by +: T2+ADC
    subjects: list[str] = opt([])  # the subjects to read, e.g. A1,B1; empty: all
    val_subjects: list[str] = opt([])  # subjects scored with their labels after each epoch (logged, and best.pt)
    # A folder for built slice arrays (reused while the files and slicing are unchanged).
    cache: str = ""

    def check(self, prefix: str = "data.") -> None:
        """Its slicing, and the split rule between the subjects and the validation subjects."""
        super().check(prefix)
        check_split_lists(self.subjects, self.val_subjects,
                          names=(f"--subjects ({prefix}subjects)", f"--val-subjects ({prefix}val_subjects)", "test"))


@dataclass
class OptimConfig:
    """The optimiser, its learning rate and schedule, and the length of training."""

    optimizer: str = opt("adam", choices=("adam", "sgd"))  # the optimiser
    lr: float = opt(1e-3, above=0)  # the learning rate
    momentum: float = opt(0.9, low=0, high=1)  # SGD's momentum (sgd only)
    nesterov: bool = False  # Nesterov momentum (sgd only); nnU-Net: sgd, lr 1e-2, momentum 0.99, nesterov, poly
    weight_decay: float = opt(0.0, low=0)  # L2 weight decay
    # the learning-rate schedule, set once per epoch: cosine, step (/10 at each third), poly (nnU-Net:
    # lr * (1 - epoch/epochs)^0.9)
    schedule: str = opt("none", choices=("none", "cosine", "step", "poly"))
    epochs: int = opt(20, low=1)  # passes over the training slices
    batch_size: int = opt(12, low=1)  # samples per step (under torchrun: the global batch)
    max_steps_per_epoch: int = opt(0, low=0)  # cut an epoch short after this many steps; 0: no cut
    # torch.compile the training step's network: 1.6x faster steps on this 2-core CPU (ENet, 128x128)
    # after ~3.5 min of compiling, so it pays only on long runs (bench/throughput.py --compile).
    compile: bool = False


@dataclass
class OutputConfig:
    # Replace the run (or file) already at ``out``: that run's files are deleted first. Inputs are
    # never written (sfda.stages.outputs); without it a folder holding another run is refused.
    overwrite: bool = False


@dataclass
class DeviceConfig:
    # auto: CUDA when torch sees a GPU, else the CPU (said once in the log); or cpu, cuda, cuda:N
    device: str = opt("auto")


@dataclass
class RunConfig(DeviceConfig, OutputConfig):
    """Where and how a training-like stage runs."""

    seed: int = opt(0, low=0)  # the random seed (the same seed and thread count repeat a run)
    out: str = ""  # the output folder
    # continue the run in ``out`` from its last.pt (the same settings and inputs, checked; more epochs allowed)
    resume: bool = False
    # Also keep each epoch's weights (epoch_NNN.pt); last.pt, selected.pt, best.pt and --resume need none.
    keep_epochs: bool = False


@dataclass
class SupervisedSettings:
    """What every supervised stage trains: the network, its optimiser, intensity augmentation."""

    net: str = "enet"  # the network: enet, unet, or a MONAI one by name (monai.UNet, ...)
    net_args: dict[str, Any] = opt({})  # the network's arguments, e.g. {width: 16} or MONAI's {channels: [...]}
    optim: OptimConfig = opt(OptimConfig())  # the optimiser
    # Random per-image contrast, brightness and gamma (sfda.data.transforms).
    augment: bool = True
    # Shape over contrast: the probability of mirroring an image's intensities, and of a random
    # piecewise-linear intensity curve (0 = never); only with augment.
    invert: float = opt(0.0, low=0, high=1)
    remap: float = opt(0.0, low=0, high=1)  # the probability of a random piecewise-linear intensity curve


@dataclass
class TrainSettings(SupervisedSettings):
    """What `sfda train-source` trains (the experiment's ``source`` section, and the Oracle)."""

    # ce: cross-entropy (Eq. 1); dice_ce: cross-entropy + (1 - mean soft Dice over the foreground
    # structures, pooled over the batch), as nnU-Net (sfda.losses.dice_ce).
    loss: str = opt("ce", choices=("ce", "dice_ce"))
    # The share of each batch drawn from samples holding a foreground structure (nnU-Net: 0.33).
    oversample_fg: float = opt(0.0, low=0, high=1)
    spatial: SpatialConfig = opt(SpatialConfig())


@dataclass
class TrainConfig(RunConfig, TrainSettings):
    """``sfda train-source`` (and the Oracle, trained on target labels)."""

    data: DataConfig = opt(DataConfig())


@dataclass
class PriorTrainSettings(SupervisedSettings):
    """What `sfda train-prior` trains: the class-ratio regressor (the experiment's ``prior.regressor``)."""

    net: str = "regressor"
    # width 64 + cosine + 60 epochs: validation MAE 0.0196 / 0.0197 (seeds 0 / 1) on slices with disc,
    # against 0.0234 for width 32, constant lr, 30 epochs (crops, opp, A1-D1 -> E1-F1)
    net_args: dict[str, Any] = opt({"width": 64})
    optim: OptimConfig = opt(OptimConfig(lr=1e-3, epochs=60, schedule="cosine"))


@dataclass
class PriorTrainConfig(RunConfig, PriorTrainSettings):
    """``sfda train-prior``."""

    data: DataConfig = opt(DataConfig())


@dataclass
class PriorSettings:
    """How τe is built (the experiment's ``prior`` section); ``method`` names an entry of
    :data:`sfda.stages.prior.PRIORS`."""

    # how τe is built: source-position, source-mean, regressor, self or constant (sfda.stages.prior.PRIORS)
    method: str = "source-position"
    # constant: the class ratios every slice gets, e.g. [0.9, 0.1]
    ratios: list[float] = opt([], low=0, high=1)
    # Image-level tags from the target labels (the paper's weak supervision; experiments only).
    tags_from_labels: bool = False
    # source-position only: tag slices as empty where fewer source slices than this hold the structure
    min_presence: float = opt(0.0, low=0, high=1)


@dataclass
class PriorConfig(PriorSettings, DeviceConfig, OutputConfig):
    """``sfda prior``: write τe for every target slice (``out``, a CSV)."""

    data: DataConfig = opt(DataConfig())
    out: str = ""  # the prior table to write (CSV)
    regressor: str = ""  # regressor: the ratio regressor's checkpoint (`sfda train-prior`)
    checkpoint: str = ""  # self: the source segmentation model
    # self: the subjects whose target slices set its batch-norm statistics; empty: the prior's own slices
    bn_subjects: list[str] = opt([])
    # source-mean / source-position: the labelled source slices whose statistics make the prior
    source_modality: str = ""
    source_subjects: list[str] = opt([])  # source-mean / source-position: the labelled source subjects
    # a CSV slice_id,present: slices without the structure get (1, 0, ...)
    tags: str = ""


@dataclass
class DistrustSettings:
    # When a label-free check warns (sfda.metrics.trust after `adapt`; the per-scan safety net of
    # `predict --adapt`): `structure` takes the structures it distrusts from the source model and the
    # others from the adapted one (sfda.nets.merge; with one structure: the source model), `source`
    # falls back to the source model for all (selected.pt, or that scan's mask), `keep` keeps the
    # adapted one; all say so (trust.json / adapt.jsonl, the log).
    on_distrust: str = opt("structure", choices=("structure", "source", "keep"))


@dataclass
class AdaptSettings(DistrustSettings):
    """How `sfda adapt` adapts (the experiment's ``adapt`` section)."""

    method: MethodConfig = opt(MethodConfig())
    optim: OptimConfig = opt(OptimConfig(lr=1e-4, epochs=10))  # the optimiser
    # Which epoch `selected.pt` holds, chosen without target labels (sfda.engine.selection): the last,
    # the average of the epochs' weights, or the best by a held-out score (needs --val-subjects).
    select: str = opt("last", choices=SELECT_CRITERIA)


@dataclass
class NnunetImportConfig(NnunetFold, OutputConfig):
    """``sfda import-nnunet``: one fold (or several, as one ensemble) of an nnU-Net v2 result folder as an sfda source checkpoint."""

    folder: str = ""  # an nnU-Net v2 result folder (TRAINER__PLANS__CONFIG)
    out: str = ""  # the sfda checkpoint to write


@dataclass
class AdaptConfig(RunConfig, AdaptSettings, NnunetSource):
    """``sfda adapt``: start from a source checkpoint, adapt on target slices."""

    data: DataConfig = opt(DataConfig())
    checkpoint: str = ""  # the source model (OUT/selected.pt of `sfda train-source`)
    prior: str = ""  # the prior table τe (`sfda prior`); needed by adaent, adasource


@dataclass
class PredictionSettings:
    # Average the logits over the input's flips along the axes the model allows, as nnU-Net predicts
    # (an nnU-Net model: its checkpoint's inference_allowed_mirroring_axes, kept at import; sfda's own
    # models allow none, so nothing changes for them); --no-mirroring: one plain pass.
    mirroring: bool = True


@dataclass
class EvaluateConfig(NnunetSource, PredictionSettings, DeviceConfig, OutputConfig):
    """``sfda evaluate``: 3D metrics per subject of a checkpoint on labelled cases."""

    checkpoint: str = ""  # the model to score (OUT/selected.pt of a training run)
    data: DataConfig = opt(DataConfig())
    out: str = ""  # the output folder (metrics.json, metrics.csv)


@dataclass
class PredictConfig(DistrustSettings, NnunetSource, PredictionSettings, DeviceConfig, OutputConfig):
    """``sfda predict``: masks in each input's own geometry, optionally adapting to each scan first."""

    checkpoint: str = ""  # the model (OUT/selected.pt of a training run)
    inputs: list[str] = opt([])  # volume files, folders or a case list (the command's positional arguments)
    out: str = ""  # the folder for the masks
    entropy: bool = False  # also write each scan's entropy map (<name>_entropy.nii.gz)
    probabilities: bool = False  # also write each class's probability (<name>_prob_<class>.nii.gz)
    # continue a run into ``out`` (the same checkpoint and settings, checked): inputs whose mask is
    # there already are skipped (`--continue`, as nnU-Net's --continue_prediction)
    resume: bool = False
    # Test-time adaptation per scan (sfda.stages.predict_adapt): a source-free method, or "" (none).
    adapt: str = opt("", choices=("", *per_scan_methods()))
    # gradient steps per scan, each on a batch of optim.batch_size of the scan's slices
    steps: int = opt(10, low=1)
    # episodic: every scan starts from the source model; continual: from the previous scan's model
    mode: str = opt("episodic", choices=("episodic", "continual"))
    # a prior table (sfda prior) with rows <file stem>:<slice>; default: the checkpoint's position prior
    prior: str = ""
    # the method's knobs (method.name is set by `adapt`) and the optimiser's (optim.epochs is unused)
    method: MethodConfig = opt(MethodConfig())
    optim: OptimConfig = opt(OptimConfig(lr=1e-4, batch_size=12))
    seed: int = opt(0, low=0)  # the seed of the per-scan batches
    # I/N: predict only share I of N of the inputs (scans I, I+N, ... of the sorted list), for job
    # arrays writing into one folder; empty: all (under torchrun each process takes its share of it)
    shard: str = ""


@dataclass
class ReportConfig(OutputConfig):
    """``sfda report``: table, curves and mask grid over evaluated runs."""

    runs: list[str] = opt([])  # run folders, each with eval/ and log.jsonl (the command's positional arguments)
    out: str = ""  # the folder for report.md, results.md and the figures
    title: str = "sfda report"  # the report's title
    # a label per run, in order (default: each run folder's name)
    names: list[str] = opt([])
