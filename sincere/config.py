"""Experiment configuration: YAML files plus ``key=value`` overrides -> typed, validated dataclasses.

A config file is read top to bottom like the dataclasses below; every hyperparameter lives here and
nowhere else. Overrides use dotted paths for nested sections (``optim.lr=0.1``,
``data.path=/images``) and bare names for top-level keys (``epochs=1``). Two shorthands read as
you would expect: ``loss=supcon`` sets ``loss.name``; ``dataset=...`` is the top-level key.
Values are parsed as YAML (``resume=true``, ``data.mean=[0.5,0.5,0.5]``) and checked against the
field's type; unknown keys and wrong types are errors that name the key and list the valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says what to change."""


# A switch that can be left to the machine: true, false, or "auto" (decided when the run starts,
# e.g. bf16 autocast where the processor computes bf16 natively; see sincere/precision.py).
AutoBool = typing.Union[bool, typing.Literal["auto"]]


@dataclass
class AugmentConfig:
    """SupCon's two-view augmentation (Khosla et al.; Feeney & Hughes Sec. 4.3)."""
    crop_scale: tuple[float, float] = (0.2, 1.0)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness..hue
    jitter_p: float = 0.8
    grayscale_p: float = 0.2


@dataclass
class DataConfig:
    root: str = "data"                 # where datasets are downloaded / looked for
    path: str = ""                     # imagefolder: folder with train/ and test/ (or val/)
    image_size: int = 0                # 0: the dataset's native size
    mean: Optional[list[float]] = None  # None: the dataset's (computed for imagefolder)
    std: Optional[list[float]] = None
    subset: int = 0                    # >0: a class-stratified random subset of the training set
    test_subset: int = 0               # >0: the same for the test set (kNN monitor)
    subset_seed: int = 0               # draws the subsets (and digits' train/test split): fixed
                                       #   across training seeds, so runs of several seeds train
                                       #   and are tested on the same images
    num_workers: int = 2
    pipeline: str = "pil"              # pil: torchvision transforms in DataLoader workers;
                                       # device: the training set as one uint8 tensor on the
                                       #   training device, augmented per sample in batched ops
                                       #   (sincere/augment/device.py; not for imagefolder)
    drop_last: bool = True             # false: keep each epoch's last partial batch (the authors'
                                       #   code: 98 steps per CIFAR epoch instead of 97)
    skip_unreadable: bool = False      # imagefolder: leave out image files PIL cannot read
                                       #   (checked once at start, count printed) instead of
                                       #   stopping at the first one
    augment_threads: int = 1           # device pipeline on a CPU: intra-op threads of the
                                       #   augmentation (0: torch's setting)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    arch: str = "resnet50"             # resnet18 | resnet34 | resnet50 (CIFAR stem)
    width: int = 64                    # channels of the first stage (64 = torchvision's)
    proj_dim: int = 128                # projection head output, L2-normalised


@dataclass
class LossConfig:
    """The trained loss: ``name`` from sincere.losses.LOSSES (or ``ce``, the supervised
    cross-entropy reference, sincere.supervised), and its options. A loss receives the options
    its constructor takes (sincere.losses.loss_options), the others are ignored."""
    name: str = "sincere"
    temperature: float = 0.1
    eps: float = 0.0                   # eps-supinfonce only
    beta: float = 1.0                  # hscl / hucl only
    detach_weights: bool = False       # hscl / hucl only
    negatives_scale: str = "n_neg"     # hscl / hucl only: the tilted negative mean is scaled by
                                       #   n_neg = |N_t| (SINCERE's form) or batch = every other
                                       #   image's views, n - n_views (Jiang et al.'s code: 2B - 2)
    pair_mean: bool = False            # hscl / hucl only: average -log over all positive pairs of
                                       #   the batch at once (Jiang et al.'s code) instead of per
                                       #   anchor, then over anchors
    implementation: str = "fast"       # fast (hand-derived backward kernels, the default) |
                                       #   readable (sincere/losses/readable.py, plain autograd:
                                       #   the definition; same values to rounding, slower)


@dataclass
class OptimConfig:
    """SGD with a linear warm-up, then cosine annealing or step decay (sincere/optim.py).

    Defaults: Feeney & Hughes Sec. 4.3 as written (warm-up from 0.0005 to lr, cosine to
    lr_min, updated every step). The authors' code differs (configs/official/): warm-up from
    0.01 to the cosine's value at the end of warm-up, cosine updated once per epoch; its linear
    probe decays the rate by 0.2 at epochs 60, 75 and 90 without warm-up."""
    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 10.0        # 0: none
    warmup_from: float = 0.0005
    warmup_to: str = "lr"              # lr | schedule (the main schedule's rate at the end of
                                       #   warm-up, as the authors' code computes it)
    schedule: str = "cosine"           # cosine (to lr_min at the last epoch) | step (x gamma at
                                       #   each milestone epoch)
    granularity: str = "step"          # step: the schedule moves every optimizer step; epoch:
                                       #   once per epoch (warm-up is always per step)
    lr_min: float = 0.0005             # cosine only
    milestones: list[int] = field(default_factory=list)   # step only: epochs (1-based: the rate
                                       #   drops after epoch m)
    gamma: float = 0.1                 # step only


LOSS_SCOPES = ("global", "per_gpu")
PIPELINES = ("pil", "device")
SCHEDULES = ("cosine", "step")
GRANULARITIES = ("step", "epoch")
WARMUP_TARGETS = ("lr", "schedule")
NEGATIVE_SCALES = ("n_neg", "batch")


@dataclass
class DistributedConfig:
    """Multi-GPU training under torchrun (``make pretrain GPUS=N``); ignored in a single process.
    ``batch_size`` stays the global batch: each of the N processes loads batch_size / N images."""
    loss_scope: str = "global"         # global: the loss sees the whole batch, every sample
                                       #   contrasts with every other on every GPU (= one GPU);
                                       # per_gpu: each GPU's loss on its own samples only, averaged
                                       #   (the official code's behaviour, for comparison)
    sync_bn: bool = False              # SyncBatchNorm: BN statistics over the global batch, as on
                                       #   one GPU (CUDA only); false: per-GPU statistics
    backend: str = "auto"              # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    timeout_min: float = 30.0          # collective timeout; other ranks wait this long for rank
                                       #   0's kNN evaluation and checkpoint writes
    stop_check_every: int = 1          # steps between the ranks' agreement on a stop signal (a
                                       #   one-integer all-reduce on a CPU gloo group, never a
                                       #   device sync; see sincere/preemption.py)


@dataclass
class MonitorConfig:
    """What pretraining measures beside the trained loss. Every monitored loss is evaluated on
    the training batches (Table 1; Jiang et al.'s Fig. 5); the gradient diagnostics on a few
    training batches (Feeney & Hughes Sec. 3.3: Eq. 13/14 coefficients, same-class pairs
    repelled); the held-out ones on fixed test-set batches (Theorem 3's KL bound, Jiang et al.'s
    Assumption 1)."""
    losses: list[str] = field(default_factory=lambda: ["sincere", "supcon", "infonce", "hscl",
                                                       "hucl"])
    betas: list[float] = field(default_factory=lambda: [1.0, 2.0])
                                       # tilts for the hscl/hucl monitors and Assumption 1
    gradients_every: int = 1           # epochs between gradient diagnostics (0: never)
    gradient_batches: int = 4          # training batches they look at (the epoch's first ones)
    gradient_views: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
                                       # also on the first m views of those batches, to show the
                                       #   repelled fraction growing with samples per class
    heldout_every: int = 1             # epochs between held-out diagnostics (0: never)
    heldout_batches: int = 4           # test-set batches of batch_size images, one view each


@dataclass
class TensorBoardConfig:
    """What pretraining writes to ``tb/`` beside the per-epoch scalars (sincere/tensorboard.py).
    None of it changes what is trained."""
    step_scalars: bool = True          # per-step loss(es) and lr, kept on the device and written
                                       #   once per epoch (no host read per step)
    view_images: int = 8               # images whose augmented views make the grid at the start
                                       #   (0: no grid)
    projector_images: int = 1000       # test images embedded in the Projector at the end, with
                                       #   class labels (0: none)
    sprite_max_size: int = 64          # images up to this size also get sprites in the Projector


@dataclass
class PretrainConfig:
    dataset: str = "cifar10"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)
    epochs: int = 1000
    batch_size: int = 512              # images per step; each gives n_views views
    n_views: int = 2
    max_steps: int = 0                 # >0: stop after this many steps (dry runs)
    seed: int = 0
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    amp: AutoBool = "auto"             # bf16 autocast of the model (the loss stays fp32); auto:
                                       #   on CUDA with bf16 support, and on CPUs that compute
                                       #   bf16 natively (avx512_bf16 / amx_bf16), else fp32
    channels_last: AutoBool = "auto"   # channels_last memory format; auto: on CUDA, and on the
                                       #   CPU together with amp (where it was measured faster)
    compile: bool = False              # torch.compile the model (slow first steps; on the CPU it
                                       #   needs a C++ compiler)
    deterministic: bool = False        # torch.use_deterministic_algorithms, for exact resumes
    threads: int = 0                   # >0: torch.set_num_threads on CPU
    knn_every: int = 10                # epochs between kNN evaluations (0: never; last always)
    knn_k: int = 20
    checkpoint_every: int = 50         # epochs between kept epoch_XXXX.pt (last.pt every epoch)
    keep_checkpoints: int = 0          # >0: keep only the newest K epoch_XXXX.pt (0: keep all)
    resume: bool | str = False         # true: continue from last.pt when there is one; auto: the
                                       #   same, but only a run of the same config (else an
                                       #   error), and start fresh when there is none; false: a
                                       #   fresh run, refused if the folder holds one
    run_dir: str = ""                  # default runs/<name>
    name: str = ""                     # default <dataset>-<loss>


SHORTHANDS = {"loss": "loss.name"}
CE = "ce"          # the loss name of the supervised cross-entropy reference (sincere.supervised)
# what a ce run must set: the contrastive monitors do not apply to a classifier's logits
CE_MONITORS_OFF = ("monitor.losses=[]", "monitor.gradients_every=0", "monitor.heldout_every=0")


def is_supervised(loss_name: str) -> bool:
    """Whether a loss name is the supervised cross-entropy reference (``ce``), not a contrastive
    loss of ``sincere.losses.LOSSES``."""
    return str(loss_name).lower() == CE


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _valid_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += _valid_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted where lossless."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be one of {', '.join(map(str, typing.get_args(tp)))}; "
                          f"got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], key)
        for option in inner:                      # e.g. AutoBool: true, false or "auto"
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        names = [", ".join(map(str, typing.get_args(a))) if typing.get_origin(a) is typing.Literal
                 else ("true, false" if a is bool else a.__name__) for a in inner]
        raise ConfigError(f"{key} must be one of {', '.join(names)}; got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, e.g. {key}=[0.5,0.5,0.5]; got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} entries; got {value!r}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        item = args[0] if args else Any
        return [_coerce(v, item, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false; got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer; got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):             # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number; got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string; got {value!r}")
    return value


def _build(cls, values: dict[str, Any], prefix: str = ""):
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} must be a mapping of keys")
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; valid keys: "
            + ", ".join(_valid_keys(cls, prefix)))
    kwargs = {}
    for name, value in values.items():
        tp = types_[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return cls(**kwargs)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=true"]`` -> nested dict ``{"a": {"b": 1}, "c": True}`` (values as YAML)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. epochs=10)")
        key, raw = item.split("=", 1)
        key = SHORTHANDS.get(key.strip(), key.strip())
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"cannot parse the value of {key}: {raw!r} ({err})") from None
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is not a section")
        node[parts[-1]] = value
    return nested


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None,
                cls=PretrainConfig):
    """Read a YAML config (or the defaults), apply overrides, validate, and return ``cls``."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(_yaml_problem(path, err)) from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {path} cannot be read ({err}); pass a YAML file, "
                              "e.g. configs/mini/fashion_mnist.yaml") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must be a mapping of keys ('key: value' lines, e.g. "
                              f"'epochs: 10'); it holds a {type(values).__name__}")
    values = _merge(values, parse_overrides(overrides or []))
    config = _build(cls, values)
    validate(config)
    return config


def _yaml_problem(path: Path, err: yaml.YAMLError) -> str:
    """One line naming the file, the line and column, and what the parser found there."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    return (f"{where}: not valid YAML ({problem}); fix that line (check indentation, a "
            "missing ':' or an unclosed bracket or quote)")


def from_dict(values: dict[str, Any], cls=PretrainConfig):
    """A config from plain data (e.g. the ``config`` saved in a checkpoint); keys added to the
    classes since it was written take their defaults."""
    config = _build(cls, values)
    validate(config)
    return config


def _check_name(check, key: str, value) -> None:
    """Run a registry's own check of a name, turning its ValueError into a ConfigError."""
    try:
        check(value)
    except ValueError as err:
        raise ConfigError(f"{key} {value!r} {err}") from None


def validate(config) -> None:
    """Checks across fields that types alone cannot express. Names (dataset, loss, arch,
    backend, monitored losses) are checked against the registries of the modules that define
    them, which are the only lists of valid names."""
    if isinstance(config, PretrainConfig):
        _validate_pretrain(config)
    if isinstance(config, (PretrainConfig, LinearConfig)):
        _validate_optim(config.optim)
    if isinstance(config, LinearConfig):
        if not config.run_dir:
            raise ConfigError("run_dir=<pretraining run directory> is required")
        if config.epochs < 1 or config.batch_size < 1:
            raise ConfigError("epochs and batch_size must be at least 1")


def _validate_optim(o: OptimConfig) -> None:
    for key, value, choices in (("schedule", o.schedule, SCHEDULES),
                                ("granularity", o.granularity, GRANULARITIES),
                                ("warmup_to", o.warmup_to, WARMUP_TARGETS)):
        if value not in choices:
            raise ConfigError(f"optim.{key} {value!r} unknown; choose one of {', '.join(choices)}")
    if o.warmup_epochs < 0:
        raise ConfigError(f"optim.warmup_epochs must be >= 0; got {o.warmup_epochs}")
    if o.warmup_to == "schedule" and o.granularity != "epoch":
        raise ConfigError("optim.warmup_to=schedule (the authors' warm-up target) goes with "
                          "optim.granularity=epoch; set both, or warmup_to=lr")
    if o.schedule == "step" and any(m < 1 for m in o.milestones):
        raise ConfigError(f"optim.milestones are epochs >= 1; got {o.milestones}")


def _validate_pretrain(config: PretrainConfig) -> None:
    from sincere.data import DATASETS
    from sincere.distributed import check_backend
    from sincere.losses import IMPLEMENTATIONS, LOSSES, check_temperature, loss_options
    from sincere.models import check_arch

    if config.dataset not in DATASETS:
        raise ConfigError(f"dataset {config.dataset!r} unknown; choose one of {list(DATASETS)}")
    if config.dataset == "imagefolder" and not config.data.path:
        raise ConfigError("dataset=imagefolder needs data.path=<folder with train/ and test/>")
    supervised = is_supervised(config.loss.name)
    if not supervised:
        try:
            loss_options(config.loss.name)
        except ValueError:
            raise ConfigError(f"loss {config.loss.name!r} unknown; choose one of "
                              f"{', '.join(LOSSES)}, or {CE} (supervised cross-entropy)") from None
    m = config.monitor
    if supervised and (m.losses or m.gradients_every or m.heldout_every):
        raise ConfigError("loss=ce trains a classifier, so the contrastive monitors do not apply: "
                          f"set {' '.join(CE_MONITORS_OFF)}")
    _check_name(check_arch, "model.arch", config.model.arch)
    for key in ("epochs", "batch_size", "n_views", "model.width", "model.proj_dim"):
        obj = config
        for part in key.split("."):
            obj = getattr(obj, part)
        if obj < 1:
            raise ConfigError(f"{key} must be at least 1; got {obj}")
    if config.data.pipeline not in PIPELINES:
        raise ConfigError(f"data.pipeline {config.data.pipeline!r} unknown; choose pil "
                          "(DataLoader workers) or device (batched on the training device)")
    if config.data.pipeline == "device" and not DATASETS[config.dataset].in_memory:
        in_memory = [name for name, spec in DATASETS.items() if spec.in_memory]
        raise ConfigError(f"data.pipeline=device needs an in-memory dataset ({', '.join(in_memory)}"
                          f"); use data.pipeline=pil for {config.dataset}")
    if config.loss.negatives_scale not in NEGATIVE_SCALES:
        raise ConfigError(f"loss.negatives_scale {config.loss.negatives_scale!r} unknown; choose "
                          f"one of {', '.join(NEGATIVE_SCALES)}")
    if config.loss.implementation not in IMPLEMENTATIONS:
        raise ConfigError(f"loss.implementation {config.loss.implementation!r} unknown; choose "
                          f"one of {', '.join(IMPLEMENTATIONS)}")
    try:
        check_temperature(config.loss.temperature)
    except ValueError as err:
        raise ConfigError(f"loss.{err}") from None
    if isinstance(config.resume, str) and config.resume != "auto":
        raise ConfigError(f"resume must be true or false (or auto); got {config.resume!r}")
    if config.keep_checkpoints < 0:
        raise ConfigError(f"keep_checkpoints must be >= 0 (0 keeps every epoch_XXXX.pt); got "
                          f"{config.keep_checkpoints}")
    d = config.distributed
    if d.stop_check_every < 1:
        raise ConfigError(f"distributed.stop_check_every must be at least 1; got "
                          f"{d.stop_check_every}")
    if d.loss_scope not in LOSS_SCOPES:
        raise ConfigError(f"distributed.loss_scope {d.loss_scope!r} unknown; choose one of "
                          f"{LOSS_SCOPES}")
    _check_name(check_backend, "distributed.backend", d.backend)
    if d.timeout_min <= 0:
        raise ConfigError(f"distributed.timeout_min must be positive; got {d.timeout_min}")
    m = config.monitor
    for name in m.losses:
        try:
            loss_options(name)
        except ValueError:
            raise ConfigError(f"monitor.losses: {name!r} unknown; choose from "
                              f"{', '.join(LOSSES)}") from None
    for key in ("gradients_every", "gradient_batches", "heldout_every", "heldout_batches"):
        if getattr(m, key) < 0:
            raise ConfigError(f"monitor.{key} must be >= 0; got {getattr(m, key)}")
    if any(v < 2 for v in m.gradient_views):
        raise ConfigError(f"monitor.gradient_views are view counts >= 2; got "
                          f"{m.gradient_views}")
    for key in ("view_images", "projector_images", "sprite_max_size"):
        if getattr(config.tensorboard, key) < 0:
            raise ConfigError(f"tensorboard.{key} must be >= 0 (0: off); got "
                              f"{getattr(config.tensorboard, key)}")


def to_dict(config) -> dict[str, Any]:
    """The resolved config as plain data (tuples as lists), for config.yaml in the run dir."""
    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(config))


def dump_config(config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def _linear_optim() -> OptimConfig:
    return OptimConfig(lr=5.0, momentum=0.9, weight_decay=0.0, warmup_epochs=10.0,
                       warmup_from=0.05, lr_min=0.05)


@dataclass
class LinearConfig:
    """Linear evaluation of a frozen encoder (Feeney & Hughes Sec. 4.3): cross-entropy, 100 epochs
    of SGD (momentum 0.9, no weight decay), batch 512, lr 5 with 10 warm-up epochs from 0.05 and
    cosine back to 0.05. ``augment`` uses the standard train-time augmentation (random resized
    crop with scale 0.2-1 and horizontal flip); without it, features are computed once and
    cached, which is what makes CPU-scale runs fast."""
    run_dir: str = ""                  # the pretraining run to evaluate (required)
    checkpoint: str = "last.pt"
    epochs: int = 100
    batch_size: int = 512
    optim: OptimConfig = field(default_factory=_linear_optim)
    augment: bool = True
    crop_scale: tuple[float, float] = (0.2, 1.0)
    flip_p: float = 0.5
    num_workers: int = 2
    seed: int = 0
    device: str = "auto"
    threads: int = 0
