"""Recipes: YAML files validated by a strict pydantic schema, layered as defaults < recipe < CLI overrides.

Every field has a documented default, so a recipe lists only what differs. Validation errors are turned
into one line that names the field (``optim.lr: must be > 0 (got -0.1)``), never a traceback.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_core import core_schema

from ssl_transfer.data.augment_spec import AugmentConfig
from ssl_transfer.errors import UserError
from ssl_transfer.schema import MethodConfig, StrictModel

RECIPE_DIRS = (Path(__file__).parent / "recipes", Path(__file__).parent.parent / "recipes")


class RecipeError(UserError, ValueError):
    """A recipe could not be read or validated; ``str(err)`` is one line naming the field."""


class DataConfig(StrictModel):
    """Where the images come from and how batches are formed."""

    source: str = Field(
        "digits",
        description="registered data source: digits, npz, mnist, fashion_mnist, cifar10, stl10, imagefolder, shards",
    )
    path: str | None = Field(None, description="npz: the .npz file with x_train/y_train/x_test/y_test")
    root: str | None = Field(
        None,
        description="torchvision sources: dataset root; imagefolder: folder of training images; shards: folder or "
        "URL of the training shards",
    )
    test_root: str | None = Field(None, description="imagefolder, shards: optional test images (folder or shards)")
    download: bool = Field(False, description="torchvision sources: download into root if missing (needs network)")
    unlabeled: bool = Field(False, description="stl10: pretrain on train+unlabeled (100k extra images)")
    image_size: Annotated[int, Field(ge=4, le=1024)] | None = Field(
        None,
        description="resize to this square size; None keeps the native size (imagefolder: size of the first image)",
    )
    channels: Literal[1, 3] | None = Field(
        None, description="convert to 1 (grayscale) or 3 (RGB) channels; None keeps the native count"
    )
    limit_train: Annotated[int, Field(gt=0)] | None = Field(
        None, description="use only the first N training images (quick runs)"
    )
    batch_size: Annotated[int, Field(gt=0)] = Field(
        256, description="images per optimizer step, per device (global batch = this x devices x nodes)"
    )
    num_workers: Literal["auto"] | Annotated[int, Field(ge=0)] = Field(
        "auto",
        description="DataLoader workers; auto = 0 for in-memory arrays (batches are one index op), min(8, CPUs) for "
        "image folders",
    )
    in_memory: bool = Field(
        False,
        description="imagefolder: decode every image once at start into memory (uint8, resized), then train like an "
        "array source",
    )
    bad_images: Literal["skip", "error"] = Field(
        "skip",
        description="imagefolder: unreadable or corrupt files are skipped and counted, or stop the run naming the file",
    )
    verify: Literal["auto", "all", "lazy"] = Field(
        "auto",
        description="imagefolder: check every file before training (all), only as training reads it (lazy), or all "
        "up to 50,000 files and lazily beyond (auto)",
    )
    decode: Literal["draft", "full", "device"] = Field(
        "draft",
        description="imagefolder, shards: draft lets a large JPEG decode at 1/2, 1/4 or 1/8 scale while it stays at "
        "least the training size (fast); full decodes every pixel before resizing; device hands the training loader's "
        "JPEGs to torchvision.io.decode_jpeg on the training device in batches (nvJPEG on a GPU)",
    )

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        from ssl_transfer.data.sources import SOURCES

        if v not in SOURCES:
            raise ValueError(SOURCES.unknown_message(v))
        return v

    @model_validator(mode="after")
    def _needs(self) -> DataConfig:
        from ssl_transfer.data.sources import SOURCES

        for key in SOURCES.get(self.source).required:
            if getattr(self, key) is None:
                raise ValueError(f"data.{key}: required when data.source={self.source}")
        return self


class BackboneConfig(StrictModel):
    """The encoder: a small CNN (cnn_tiny, cnn_small, cnn_base) or any timm model name."""

    name: str = Field(
        "cnn_small",
        description="a small CNN (cnn_tiny, cnn_small, cnn_base), a CIFAR ResNet (resnet18_cifar, resnet50_cifar) or "
        "any timm model name",
    )
    pretrained: bool = Field(
        False, description="timm only: load pretrained weights (must already be in the local cache)"
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for the constructor (e.g. drop_path_rate)"
    )

    @field_validator("name")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        from ssl_transfer.backbones import check_backbone_name

        check_backbone_name(v)
        return v


class OptimConfig(StrictModel):
    """Optimizer and learning-rate schedule (linear warm-up, then cosine decay per step)."""

    optimizer: Literal["adamw", "adam", "sgd", "lars"] = Field(
        "adamw", description="lars = sgd with layer-wise trust ratios (You et al. 2017)"
    )
    lr: Annotated[float, Field(gt=0)] = Field(
        1e-3, description="peak learning rate (after warm-up), scaled by lr_batch_size when set"
    )
    lr_batch_size: Annotated[int, Field(gt=0)] | None = Field(
        None,
        description="the global batch that lr is for: lr is scaled by global batch / lr_batch_size (linear rule); "
        "null = lr as given",
    )
    weight_decay: Annotated[float, Field(ge=0)] = Field(1e-4, description="decoupled for adamw, L2 for adam/sgd/lars")
    momentum: Annotated[float, Field(ge=0, lt=1)] = Field(0.9, description="sgd/lars momentum")
    trust_coefficient: Annotated[float, Field(gt=0)] = Field(
        0.001,
        description="lars: each layer's step is lr x trust_coefficient x |w| / |g| (norms and biases, which get no "
        "weight decay, are not adapted)",
    )
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.999), description="adam/adamw moment decay rates"
    )
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="after warm-up: cosine decay per step to lr x min_lr_ratio, or constant"
    )
    warmup_epochs: Annotated[float, Field(ge=0)] = Field(
        0.0,
        description="linear warm-up length in epochs (a warm-up of half the run or more is warned about; one of the "
        "whole run is cut to half)",
    )
    warmup_fraction: Annotated[float, Field(ge=0, lt=1)] | None = Field(
        None,
        description="warm-up as a fraction of the run instead of warmup_epochs, so that it follows "
        "trainer.max_epochs; set one of the two",
    )
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = Field(0.0, description="cosine ends at lr * min_lr_ratio")
    exclude_norm_and_bias: bool = Field(True, description="no weight decay on norm layers and biases")

    @model_validator(mode="after")
    def _one_warmup(self) -> OptimConfig:
        if self.warmup_fraction is not None and self.warmup_epochs > 0:
            raise ValueError(
                f"optim.warmup_epochs={self.warmup_epochs:g} and optim.warmup_fraction={self.warmup_fraction:g}: "
                "set one of the two (optim.warmup_epochs=0 to use the fraction)"
            )
        return self


class TrainerConfig(StrictModel):
    """PyTorch Lightning Trainer settings."""

    max_epochs: Annotated[int, Field(gt=0)] = Field(
        10, description="passes over the training images (schedules are laid out over them)"
    )
    max_steps: Annotated[int, Field(gt=0)] | None = Field(
        None, description="stop after this many optimizer steps (overrides max_epochs when reached first)"
    )
    accelerator: Literal["auto", "cpu", "gpu"] = Field("auto", description="auto = cuda when present, else cpu")
    devices: Literal["auto"] | Annotated[int, Field(gt=0)] = Field(
        "auto", description="devices per node; auto = all visible GPUs, or 1 CPU process"
    )
    num_nodes: Annotated[int, Field(gt=0)] = Field(1, description="machines (DDP through Lightning)")
    strategy: Literal["auto", "ddp"] = Field(
        "auto", description="auto = ddp when more than one device, else single process"
    )
    sync_batchnorm: bool = Field(
        False, description="DDP: BatchNorm statistics over the global batch (as SimCLR, BYOL, Barlow Twins papers)"
    )
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = Field(
        "auto",
        description="auto = bf16-mixed on GPU and on CPUs with native bf16 (AVX512-BF16/AMX), else 32-true; losses "
        "always run in float32",
    )
    channels_last: bool = Field(
        True, description="model and views in channels_last memory format (faster convolutions on GPUs and oneDNN CPUs)"
    )
    compile: bool = Field(
        False,
        description="torch.compile the encoder and heads (first steps slower while compiling; needs a C++ compiler "
        "on CPU)",
    )
    joint_views: bool = Field(
        False,
        description="one forward pass over all views concatenated (BatchNorm statistics shared across views) instead "
        "of one pass per view",
    )
    gradient_clip_val: Annotated[float, Field(gt=0)] | None = Field(
        None, description="clip the global gradient norm to this; null = no clipping"
    )
    log_every_n_steps: Annotated[int, Field(gt=0)] = Field(
        10, description="write step metrics (loss, lr) to metrics.jsonl every N steps"
    )
    progress_bar: bool = Field(
        True, description="a progress bar on a terminal (one line per epoch when output is not a terminal)"
    )
    deterministic: bool = Field(
        False,
        description="deterministic algorithms only (with the default batched augmentation, a resumed run then ends "
        "bit-identical to an uninterrupted one on CPU)",
    )
    checkpoint_every_n_steps: Annotated[int, Field(gt=0)] | None = Field(
        None, description="also write last.ckpt every N optimizer steps (it is always written at each epoch end)"
    )
    checkpoint_every_minutes: Annotated[float, Field(gt=0)] | None = Field(
        10.0, description="also write last.ckpt when this many minutes passed since the last write; null = off"
    )
    stop_on_nonfinite: bool = Field(
        True,
        description="stop, naming the step, when the loss or a gradient is NaN/inf (the last checkpoint stays good)",
    )


class LoggingConfig(StrictModel):
    """wandb (offline unless asked) plus the local metrics.jsonl that is always written."""

    wandb: Literal["offline", "online", "disabled"] = Field(
        "offline", description="offline writes wandb/ in the run dir (sync later); online needs network"
    )
    project: str = Field("ssl-transfer", description="wandb project")
    entity: str | None = Field(None, description="wandb team or user; null = your default")
    plots: bool = Field(True, description="save reconstruction grids and loss curves as PNG in the run dir")


class KNNConfig(StrictModel):
    """Weighted kNN on L2-normalised features (FAISS): each of the k nearest training images votes exp(cos/T)."""

    k: Annotated[int, Field(gt=0)] = Field(20, description="neighbours that vote")
    temperature: Annotated[float, Field(gt=0)] = Field(0.07, description="vote weights exp(similarity / T)")


class LinearConfig(StrictModel):
    """The linear probe: L2-regularised logistic regression (full-batch L-BFGS) on standardised frozen features."""

    l2: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [10.0**e for e in range(-7, 0)],
        description="penalties searched on a 20% validation split (mean cross-entropy + l2/2 ||W||^2; sklearn C = "
        "1/(l2 N)); "
        "a best value at an edge extends the range once by two decades",
        min_length=1,
    )
    max_iter: Annotated[int, Field(gt=0)] = Field(
        1000,
        description="L-BFGS iterations per fit at most (a fit stops earlier once its largest gradient entry is "
        "within scikit-learn's tolerance)",
    )


class FinetuneConfig(StrictModel):
    """Fine-tuning the encoder with a linear head on the labelled training images (AdamW, cosine schedule)."""

    strategies: list[Annotated[str, Field(pattern=r"^(full|head|llrd|freeze:\d+)$")]] = Field(
        default_factory=lambda: ["full"],
        description="full, head (feature extraction), llrd (layer-wise lr decay), freeze:K (first K blocks)",
    )
    epochs: Annotated[int, Field(gt=0)] = Field(20, description="epochs over the labelled images (at least 300 steps)")
    lr: Annotated[float, Field(gt=0)] = Field(
        1e-3, description="peak learning rate of the head (and of the encoder's last block under llrd)"
    )
    layer_decay: Annotated[float, Field(gt=0, le=1)] = Field(
        0.75, description="llrd: each earlier block's lr is this times the next one's"
    )
    warmup_epochs: Annotated[float, Field(ge=0)] = Field(
        0.0, description="linear lr warm-up before the cosine, in epochs (same rule as optim.warmup_epochs)"
    )


class EvalConfig(StrictModel):
    """What `ssl-transfer run` evaluates after pretraining, with the one shared evaluator."""

    protocols: list[Literal["knn", "linear", "finetune", "scratch"]] = Field(
        ["knn", "linear"],
        description="knn, linear (probe on frozen features), finetune, scratch (same network, random init)",
    )
    data: DataConfig | None = Field(
        None, description="evaluate on other data (cross-dataset transfer); default: the pretraining data"
    )
    labels_per_class: list[Annotated[int, Field(gt=0)] | None] = Field(
        [None], description="label budgets; null = all labels"
    )
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0], description="one label draw and one training run per seed"
    )
    knn: KNNConfig = Field(default_factory=KNNConfig)
    linear: LinearConfig = Field(default_factory=LinearConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)


class MonitorConfig(StrictModel):
    """Online monitoring while pretraining: kNN on the labelled held-out split and collapse signals, logged as
    ``monitor/*`` to metrics.jsonl and wandb (see :mod:`ssl_transfer.training.monitor`); kNN uses ``eval.knn``'s k
    and T."""

    enabled: Literal["auto"] | bool = Field(
        "auto", description="auto = on when the data has a test split (kNN when it is labelled)"
    )
    every_n_epochs: Annotated[int, Field(gt=0)] = Field(
        1, description="kNN every N epochs (and before the first, and at the last); collapse signals every epoch"
    )
    val_samples: Annotated[int, Field(gt=3)] = Field(
        1000, description="held-out images embedded clean each epoch: two-fold kNN within them, collapse signals"
    )
    align_samples: Annotated[int, Field(ge=0)] = Field(
        128, description="held-out images seen in two augmented views for the alignment signal"
    )
    collapse_std_ratio: Annotated[float, Field(ge=0)] = Field(
        0.05, description="warn when std of normalised embeddings x sqrt(D) falls below this"
    )
    collapse_rank: Annotated[float, Field(ge=0)] = Field(
        1.5, description="warn when the effective rank (RankMe) falls below this"
    )
    save_best: bool = Field(False, description="keep checkpoints/best.ckpt at the best monitored kNN")


class ExportConfig(StrictModel):
    """Formats written by `ssl-transfer run` besides the run dir's encoder.safetensors."""

    formats: list[Literal["safetensors", "torchscript", "pt2", "onnx", "timm"]] = Field(
        ["safetensors"],
        description="each goes to <run dir>/export/ (timm: a folder), checked against the encoder",
    )


def _methods() -> Any:
    """The method registry, imported on first use (the methods import lightly; the schema must not)."""
    from ssl_transfer.methods import METHODS

    return METHODS


@functools.cache
def _method_adapter() -> TypeAdapter:
    """Validator of the ``method`` section: the registered methods' config classes, told apart by ``name``."""
    classes = tuple(_method_tags().values())
    union: Any = Annotated[Union[classes], Field(discriminator="name")]  # built from the registry at run time
    return TypeAdapter(union)


def _method_tags() -> dict[str, type[MethodConfig]]:
    return {n: _methods().get(n).config_cls for n in _methods()}


class _RegisteredMethod:
    """Marks the ``method`` field: validated against the registry at validation time, not at import."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            lambda value: _method_adapter().validate_python(value),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda m, info: m.model_dump(mode=info.mode), info_arg=True
            ),
        )


MethodSection = Annotated[MethodConfig, _RegisteredMethod]


class Recipe(StrictModel):
    """A whole run: every section has defaults; a recipe file lists what differs."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = Field(
        "run", description="the run dir's name (default: the recipe file's stem)"
    )
    seed: Annotated[int, Field(ge=0)] = Field(
        0, description="seeds weights, data order, augmentations and the monitor's split"
    )
    output_dir: str = Field("runs", description="run dirs are created as <output_dir>/<name>")
    data: DataConfig = Field(default_factory=DataConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    method: MethodSection = Field(
        default_factory=lambda: _method_tags()["ae"].model_validate({}),
        description="the pretext method (name) and its settings",
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe as plain YAML-able data."""
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------- loading


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file path, or the name of a bundled recipe (``quickstart`` -> recipes/quickstart.yaml,
    ``protocols/cifar10_simclr_resnet18`` -> recipes/protocols/cifar10_simclr_resnet18.yaml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for d in RECIPE_DIRS:
        for cand in (d / p, d / f"{p}.yaml"):
            if cand.is_file():
                return cand
    raise RecipeError(f"recipe not found: {str(name_or_path)!r} (not a file, nor one of: {', '.join(list_recipes())})")


def list_recipes() -> list[str]:
    """Names of the bundled recipes (those in subfolders as ``folder/name``)."""
    for d in RECIPE_DIRS:
        if d.is_dir():
            return sorted(p.relative_to(d).with_suffix("").as_posix() for p in d.rglob("*.yaml"))
    return []


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.1"`` -> (["optim", "lr"], 0.1); the value is read as YAML (numbers, bools, lists)."""
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key.strip()):
        raise RecipeError(f"bad override {text!r}: expected key.sub=value, e.g. trainer.max_epochs=3")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str):
        parsed = _yaml11_float(parsed)
    return key.strip().split("."), parsed


def _yaml11_float(s: str) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; read such numbers as floats."""
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", s):
        return float(s)
    return s


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); unknown keys are left to validation to reject."""
    out = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for i, k in enumerate(keys[:-1]):
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"bad override {text!r}: {'.'.join(keys[: i + 1])} is a value, not a section")
            node = child
        node[keys[-1]] = value
    return out


def load_recipe(source: str | Path | dict[str, Any] | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe.

    ``source`` is a YAML path, a bundled recipe name, a dict, or None (all defaults). The recipe's ``name``
    defaults to the file's stem. Raises RecipeError with a one-line message on any problem.
    """
    if source is None:
        raw: dict[str, Any] = {}
    elif isinstance(source, dict):
        raw = source
    else:
        path = find_recipe(source)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise RecipeError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(raw, dict):
            raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(raw).__name__}")
        raw.setdefault("name", path.stem)  # protocols/cifar10_simclr_resnet18 -> runs/cifar10_simclr_resnet18
    raw = apply_overrides(raw, overrides or [])
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(format_validation_error(e)) from None


# --------------------------------------------------------------------------- one-line errors


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated/Optional down to a model class, or None (the method section's tagged union is
    :func:`_field_node`'s)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        models = [m for m in get_args(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
        return models[0] if len(models) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _field_node(info: Any) -> Any:
    """What a field holds, for error messages: see _unwrap; the method section gives its {name: config} dict."""
    if _RegisteredMethod in info.metadata:
        return _method_tags()
    return _unwrap(info.annotation)


def _walk(loc: tuple[Any, ...]) -> tuple[list[str], Any]:
    """Follow a pydantic error location through the schema: (displayed dotted path, model at its parent)."""
    shown: list[str] = []
    node: Any = Recipe
    parent: Any = Recipe
    for part in loc:
        if isinstance(node, dict):  # tagged union: this part is the tag, not a key
            node = node.get(part)
            parent = node
            continue
        shown.append(str(part))
        parent = node
        if isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            node = _field_node(node.model_fields[part])
        else:
            node = None
    return shown, parent


def _nested_match(parent: Any, shown: list[str]) -> list[str]:
    """For a misplaced key, the dotted name of a same-named field one section down (``lr`` -> ``optim.lr``)."""
    if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
        return []
    for key, f in parent.model_fields.items():
        sub = _field_node(f)
        if isinstance(sub, type) and issubclass(sub, BaseModel) and shown[-1] in sub.model_fields:
            return [".".join([*shown[:-1], key, shown[-1]])]
    return []


def _fmt_value(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def format_validation_error(err: ValidationError) -> str:
    """Collapse a pydantic ValidationError into one line: ``field: problem (got value)``; several joined by '; '."""
    parts = []
    for e in err.errors(include_url=False):
        shown, parent = _walk(tuple(e["loc"]))
        field = ".".join(shown) or "recipe"
        kind = e["type"]
        if kind == "extra_forbidden":
            allowed = list(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
            close = difflib.get_close_matches(shown[-1], allowed, n=1) or _nested_match(parent, shown)
            hint = f"did you mean {close[0]!r}? " if close else ""
            parts.append(f"{field}: unknown key ({hint}allowed: {', '.join(allowed)})")
        elif kind == "union_tag_invalid":
            parts.append(f"{field}.name: {_methods().unknown_message(e['ctx']['tag'])}")
        elif kind == "union_tag_not_found":
            parts.append(f"{field}.name: missing; choose one of {', '.join(_methods().names())}")
        elif kind == "value_error":
            msg = str(e["ctx"]["error"]) if "ctx" in e else e["msg"]
            parts.append(msg if msg.startswith(field + ".") else f"{field}: {msg}")
        else:
            msg = e["msg"]
            msg = re.sub(r"^Input should be", "must be", msg)
            parts.append(f"{field}: {msg} (got {_fmt_value(e['input'])})")
    return "; ".join(parts)


# --------------------------------------------------------------------------- field reference


def _type_name(annotation: Any) -> str:
    """A short, user-facing name of a field's type: ``float``, ``adamw|sgd``, ``int | null``, ``[float, float]``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (list, tuple):
        inner = [_type_name(a) for a in args if a is not Ellipsis]
        return f"[{', '.join(inner)}]" if origin is tuple else f"list of {inner[0] if inner else 'any'}"
    if origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def describe_fields(section: str | None = None, with_methods: bool = True) -> list[dict[str, Any]]:
    """Every recipe field as ``{"key", "type", "default", "description", "method"}`` (``method``: the method
    name for method fields, else None). ``section``: a top-level section (``optim``), ``method`` (every method's
    fields), a method name (``simclr``: its ``method.*`` fields) or None for all. ``with_methods=False`` (and no
    method section asked for) leaves the methods unimported (they import torch and lightly): one ``method.*`` row
    names them instead. RecipeError for anything else."""
    from ssl_transfer.registry import methods_in_source

    names = list(methods_in_source())  # from the source: the methods import torch and lightly
    if section is not None:
        with_methods = section == "method" or section in names
    rows: list[dict[str, Any]] = []

    def walk(model: type[BaseModel], prefix: str, method: str | None) -> None:
        for name, info in model.model_fields.items():
            if _RegisteredMethod in info.metadata and not with_methods:
                rows.append(
                    {
                        "key": f"{prefix}{name}.*",
                        "type": "section",
                        "default": "per method",
                        "description": f"{info.description}; its fields: ssl-transfer list fields <method> "
                        f"({', '.join(names)}) or list fields method",
                        "method": None,
                    }
                )
                continue
            node = _field_node(info)
            if isinstance(node, dict):
                for tag, cls in node.items():
                    walk(cls, f"{prefix}{name}.", tag)
                continue
            if isinstance(node, type) and issubclass(node, BaseModel):
                if info.description:  # an optional section (eval.data): its own row, then its fields
                    rows.append(
                        {
                            "key": prefix + name,
                            "type": "section | null",
                            "default": info.get_default(call_default_factory=True),
                            "description": info.description,
                            "method": method,
                        }
                    )
                walk(node, f"{prefix}{name}.", method)
                continue
            default = info.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = "(section)"
            rows.append(
                {
                    "key": prefix + name,
                    "type": _type_name(info.annotation),
                    "default": default,
                    "description": info.description or "",
                    "method": method,
                }
            )

    if section is not None and section != "method" and section not in names and section not in Recipe.model_fields:
        sections = [
            n for n, f in Recipe.model_fields.items() if n == "method" or isinstance(_unwrap(f.annotation), type)
        ]
        raise RecipeError(
            f"unknown section {section!r}; choose one of {', '.join(sections)}, or a method: {', '.join(names)}"
        )
    walk(Recipe, "", None)
    if section is None:
        return rows
    if section in names:
        return [r for r in rows if r["method"] == section]
    return [r for r in rows if r["key"] == section or r["key"].startswith(section + ".")]
