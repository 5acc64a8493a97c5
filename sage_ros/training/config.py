"""Training configuration: a YAML file mapped onto dataclasses, with `key.sub=value` overrides.

Unknown keys are errors (a typo must not silently fall back to a default). The config hash written
into checkpoints and the exported model's metadata covers everything that changes the result
(data, model, losses, schedule), not where outputs go or which device ran it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sage_ros.training.losses import LossWeights


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


@dataclass
class DataConfig:
    layout: str = "fmb"  # fmb | msrs | sage
    root: str = ""
    split: str = "train"
    crop: list[int] | None = field(default_factory=lambda: [192, 256])  # H, W; null = full frames
    flip: bool = True
    # Folder written by `train student masks` ('{root}' and '{split}' are replaced by data.root / data.split);
    # null = whole-image masks.
    mask_cache: str | None = None
    top_k: int = 4
    labels: str | bool = "auto"
    workers: int = 2
    limit: int | None = None  # use only the first N pairs (smoke runs)


@dataclass
class SamConfig:
    checkpoint: str | None = None  # local SAM checkpoint (ViT-B/L/H read off its shapes); null disables L_cs
    # Automatic mask generator settings for the mask cache: upstream's (dataset_teacher_FMB.py).
    points_per_side: int = 128
    pred_iou_thresh: float = 0.86
    stability_score_thresh: float = 0.92
    crop_n_layers: int = 1
    crop_n_points_downscale_factor: int = 2
    min_mask_region_area: int = 100


@dataclass
class SegmenterConfig:
    # 'project' = this project's trained MSRS segmentation network (frozen; labels mapped by class
    # name), or 'package.module:callable' (num_classes -> nn.Module, RGB in [0,1] -> logits).
    factory: str = "project"
    weights: str | None = None  # state dict for the factory's module, or the project network's .npz


@dataclass
class TrainSchedule:
    epochs: int = 100
    max_steps: int | None = None  # stop after this many iterations (overrides epochs)
    batch_size: int = 4
    teacher_lr: float = 5e-4
    student_lr: float = 2e-3
    min_lr: float = 1e-5
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (DDP picks cuda:LOCAL_RANK)
    threads: int | None = None  # CPU threads for torch (None: torch's default)
    log_every: int = 10
    checkpoint_every: int = 500


@dataclass
class OutputConfig:
    dir: str = "runs/sage"
    export: bool = True  # ONNX + metadata of the final student
    classes: str | list[str] = "fmb"  # class set name (msrs | fmb) or a list of names


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    train: TrainSchedule = field(default_factory=TrainSchedule)
    loss: LossWeights = field(default_factory=LossWeights)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def result_settings(self) -> dict:
        """The settings that change the result (what `hash` covers): not outputs, devices or logging."""
        d = self.to_dict()
        d.pop("output", None)
        for key in ("device", "threads", "log_every", "checkpoint_every"):
            d["train"].pop(key, None)
        d["data"].pop("workers", None)
        return d

    def hash(self) -> str:
        """sha256 (16 hex digits) of the result-relevant settings."""
        blob = json.dumps(self.result_settings(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _fill(cls: type, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown keys {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        if cls is TrainConfig:  # a section: its dataclass is the field's default factory
            kwargs[name] = _fill(fields[name].default_factory, value or {}, name)
        else:
            kwargs[name] = _coerce(fields[name].type, value, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(type_name: object, value: object, where: str) -> object:
    # PyYAML reads `5e-4` (no dot) as a string: numbers are converted by the field's declared type.
    try:
        if type_name == "float" and isinstance(value, str | int) and not isinstance(value, bool):
            return float(value)
        if type_name == "int" and isinstance(value, str):
            return int(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: expected a {type_name}, got {value!r}") from exc
    return value


def config_from_dict(values: dict) -> TrainConfig:
    cfg = _fill(TrainConfig, values or {}, "")
    if cfg.data.mask_cache:
        # So that overriding data.root alone moves the cache with the dataset.
        try:
            cfg.data.mask_cache = str(cfg.data.mask_cache).format(root=cfg.data.root, split=cfg.data.split)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"data.mask_cache: only {{root}} and {{split}} may appear in braces ({exc})") from exc
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (None: all defaults) and apply `section.key=value` overrides (YAML values)."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.max_steps=20)")
        values.setdefault(parts[0], {})
        if not isinstance(values[parts[0]], dict):
            raise ConfigError(f"override {item!r}: {parts[0]} is not a section")
        values[parts[0]][parts[1]] = yaml.safe_load(raw)
    return config_from_dict(values)
