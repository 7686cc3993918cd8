"""Pretraining runs: recipe -> data + backbone + method -> Lightning Trainer -> run dir.

Run dir ``<output_dir>/<name>/``: recipe.yaml (resolved), checkpoints/last.ckpt (each epoch, resumable),
metrics.jsonl, plots/, encoder.safetensors + encoder.json; ``run`` adds eval.json.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from ssl_transfer.backbones import build_backbone
from ssl_transfer.data import DataBundle, build_data, make_train_loader
from ssl_transfer.data.datasets import ArrayDataset, FileDataset
from ssl_transfer.data.sampler import GlobalBatchSampler
from ssl_transfer.data.views import training_views
from ssl_transfer.errors import NonFiniteError, Stopped, UserError
from ssl_transfer.export import default_export_path, export_encoder, save_run_encoder
from ssl_transfer.methods import build_method
from ssl_transfer.methods.base import PretextMethod
from ssl_transfer.recipe import Recipe, TrainerConfig, load_recipe
from ssl_transfer.training.checkpoint import PREVIOUS, AtomicCheckpointIO, LastCheckpoint, resume_checkpoint
from ssl_transfer.training.console import EpochLine, on_terminal, set_verbosity, verbosity
from ssl_transfer.training.metrics_log import JsonlLogger, read_metrics, truncate_after
from ssl_transfer.training.module import PretrainModule
from ssl_transfer.training.monitor import Monitor
from ssl_transfer.training.performance import (
    auto_precision,
    compile_children,
    cpu_bf16_hazards,
    to_channels_last,
    to_contiguous,
    uncompile,
)
from ssl_transfer.training.plots import first_images, plot_loss_curve, plot_monitor
from ssl_transfer.training.stop import StopOnSignal, signal_name

log = logging.getLogger("ssl_transfer")


@dataclass
class RunResult:
    """Where a run wrote its files, its headline numbers, and the precision it trained in (``auto`` resolved,
    after the CPU bf16 check)."""

    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    data: DataBundle | None = None
    precision: str | None = None


def resolve_device(cfg: TrainerConfig) -> tuple[str, str]:
    """(accelerator, precision) with ``auto`` resolved: cuda when present, else cpu; bf16-mixed on GPUs and on
    CPUs with native bf16, else 32-true (:func:`~ssl_transfer.training.performance.auto_precision`)."""
    accelerator = cfg.accelerator if cfg.accelerator != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise UserError("trainer.accelerator=gpu but no CUDA device is visible")
    precision = cfg.precision if cfg.precision != "auto" else auto_precision(accelerator)
    return accelerator, precision


def _safe_precision(
    cfg: TrainerConfig, method: PretextMethod, input_shape: tuple[int, int, int], local_hw: tuple[int, int]
) -> str:
    """The run's precision: :func:`resolve_device`'s, except that bf16 on a CPU is refused where oneDNN's bf16
    weight gradients are wrong for one of ``method``'s convolutions (:func:`cpu_bf16_hazards`): ``auto`` falls
    back to 32-true with a warning, an explicit ``bf16-mixed`` is a UserError."""
    accelerator, precision = resolve_device(cfg)
    if accelerator != "cpu" or precision != "bf16-mixed":
        return precision

    def step(m: Any) -> Any:
        return m.training_step(dummy_views(m, input_shape, local_hw))

    hazards = cpu_bf16_hazards(method, step)
    if not hazards:
        return precision
    why = f"oneDNN's bf16 weight gradients are wrong for {hazards[0]}" + (
        f" and {len(hazards) - 1} more" if len(hazards) > 1 else ""
    )
    if cfg.precision == "auto":
        log.warning(
            "trainer.precision=auto: float32 instead of bf16 on this CPU: %s; a larger data.image_size avoids it", why
        )
        return "32-true"
    raise UserError(
        f"trainer.precision=bf16-mixed on CPU: {why}; use trainer.precision=32-true or a larger data.image_size"
    )


def local_views(recipe: Recipe, method: PretextMethod) -> int:
    """The recipe's number of local views, checked against the method (a UserError before any work)."""
    n = recipe.augment.local_views
    if n and not method.supports_local_views:
        from ssl_transfer.methods import METHODS

        takes = [m for m in METHODS.names() if METHODS.get(m).supports_local_views]
        raise UserError(
            f"augment.local_views={n}: method {recipe.method.name} takes {method.num_views} views of one size; "
            f"local views are for {', '.join(takes)}"
        )
    return n


def dummy_views(
    method: PretextMethod, input_shape: tuple[int, int, int], local_hw: tuple[int, int]
) -> list[torch.Tensor]:
    """Zero views of batch 4 in the shapes ``method`` is trained on: global views, then its local views."""
    views = [torch.zeros(4, *input_shape) for _ in range(method.num_views)]
    return views + [torch.zeros(4, input_shape[0], *local_hw) for _ in range(method.num_local_views)]


def _as_recipe(recipe: Recipe | str | Path | dict, overrides: list[str] | None) -> Recipe:
    if isinstance(recipe, Recipe):
        return load_recipe(recipe.to_dict(), overrides) if overrides else recipe
    p = Path(recipe) if not isinstance(recipe, dict) else None
    if p is not None and p.is_dir() and (p / "recipe.yaml").is_file():  # a run dir: its saved recipe
        recipe = p / "recipe.yaml"
    return load_recipe(recipe, overrides)


def last_checkpoint(run_dir: Path) -> Path:
    """The run's resumable checkpoint."""
    return run_dir / "checkpoints" / "last.ckpt"


def launch_rank_zero() -> bool:
    """Whether this process is the one that starts a run (DDP workers that Lightning launches are not)."""
    return (
        getattr(rank_zero_only, "rank", 0) == 0
        and int(os.environ.get("NODE_RANK", 0)) == 0
        and int(os.environ.get("GROUP_RANK", 0)) == 0
    )


def _check_run_dir(recipe: Recipe, resume: bool, overwrite: bool) -> Path:
    """The run dir, after checking that the run may start there; changes nothing on disk."""
    run_dir = Path(recipe.output_dir) / recipe.name
    if not launch_rank_zero():  # a DDP worker: rank 0 prepared the dir before launching it
        return run_dir
    ckpt = last_checkpoint(run_dir)
    if resume:
        if not ckpt.is_file() and not ckpt.with_name(PREVIOUS).is_file():
            raise UserError(f"--resume: no checkpoint at {ckpt}")
    elif run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise UserError(
            f"run dir {run_dir} exists; pass --resume to continue it, --overwrite to replace it, or name=<new name>"
        )
    return run_dir


def _check_eval_data(recipe: Recipe, data: DataBundle) -> None:
    """Fail before training when the evaluation that follows pretraining (``run``) would find no test split."""
    if data.test is None and recipe.eval.data is None:
        raise UserError(
            f"data.source={recipe.data.source} has no test split, which the evaluation after pretraining needs "
            "(npz: x_test/y_test; imagefolder: data.test_root); or set eval.data to evaluate on other data"
        )
    if recipe.eval.data is not None and build_data(recipe.eval.data).test is None:
        raise UserError(f"eval.data (source {recipe.eval.data.source}) has no test split to evaluate on")


def _prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Create the run dir (``overwrite``: replacing an existing one); called once the inputs have been checked."""
    if launch_rank_zero() and not resume and overwrite and run_dir.exists() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _loggers(recipe: Recipe, run_dir: Path) -> list:
    loggers: list = [JsonlLogger(run_dir / "metrics.jsonl")]
    if recipe.logging.wandb != "disabled":
        from pytorch_lightning.loggers import WandbLogger

        wb = WandbLogger(
            project=recipe.logging.project,
            entity=recipe.logging.entity,
            name=recipe.name,
            save_dir=str(run_dir),
            offline=recipe.logging.wandb == "offline",
            config=recipe.to_dict(),
            settings=_wandb_settings(),
        )
        # Lightning always passes anonymous=None, which wandb >= 0.19 warns about on every run ("the anonymous
        # setting has no effect"); leaving the key out is what wandb asks for.
        if getattr(wb, "_wandb_init", {}).get("anonymous", "") is None:
            wb._wandb_init.pop("anonymous")
        loggers.append(wb)
    return loggers


def _wandb_settings() -> Any:
    import wandb

    return wandb.Settings(silent=True, console="off", x_disable_stats=True)


class _NoAdverts(logging.Filter):
    """Drops Lightning's tips that advertise its cloud products on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip:" not in record.getMessage()


for _name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_NoAdverts())
set_verbosity(verbosity())  # Lightning's device/precision banners only with -v


def build_trainer(
    recipe: Recipe,
    run_dir: Path,
    max_epochs: int | None = None,
    callbacks: list[pl.Callback] | None = None,
    precision: str | None = None,
) -> pl.Trainer:
    """A Lightning Trainer for ``recipe``: device/precision, DDP, last.ckpt (each epoch end and, per the
    recipe, every N steps / M minutes), loggers, progress bar. The loader's own sampler splits batches over
    ranks (see :class:`~ssl_transfer.data.sampler.GlobalBatchSampler`), so Lightning does not replace it.
    ``precision`` overrides the recipe's (resolved) one."""
    t = recipe.trainer
    accelerator, resolved = resolve_device(t)
    precision = precision or resolved
    strategy: Any = "auto"
    if t.sync_batchnorm and accelerator == "cpu" and t.strategy == "ddp":
        raise UserError(
            "trainer.sync_batchnorm: torch's SyncBatchNorm runs on GPUs only; on CPU use a backbone and heads "
            "without BatchNorm, or set it to false"
        )
    if t.strategy == "ddp":
        from pytorch_lightning.strategies import DDPStrategy

        strategy = DDPStrategy(find_unused_parameters=False)
    checkpoint = LastCheckpoint(last_checkpoint(run_dir), t.checkpoint_every_n_steps, t.checkpoint_every_minutes)
    show = t.progress_bar and verbosity() > 0
    bar = show and on_terminal()  # a file or a pipe gets one line per epoch instead of bar redraws
    callbacks = [checkpoint, StopOnSignal(checkpoint), *(callbacks or []), *([EpochLine()] if show and not bar else [])]
    return pl.Trainer(
        default_root_dir=str(run_dir),
        max_epochs=max_epochs or t.max_epochs,
        max_steps=t.max_steps or -1,
        accelerator=accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=cast(Any, precision),  # one of TrainerConfig.precision's literals
        gradient_clip_val=t.gradient_clip_val,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=bar,
        enable_model_summary=verbosity() >= 2,
        deterministic=t.deterministic,
        sync_batchnorm=t.sync_batchnorm,
        callbacks=callbacks,
        enable_checkpointing=False,  # Lightning's own ModelCheckpoint: LastCheckpoint replaces it
        logger=_loggers(recipe, run_dir),
        plugins=[AtomicCheckpointIO()],
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )


def pretrain(
    recipe: Recipe | str | Path | dict,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[pl.Callback] | None = None,
    require_test: bool = False,
) -> RunResult:
    """Pretrain the recipe's encoder and write the run dir; returns its path and final training metrics.

    ``recipe`` is a Recipe, a YAML path, a bundled recipe name, a dict, or a run dir (its saved recipe).
    ``callbacks``: extra Lightning callbacks for the Trainer (timers, custom logging). ``require_test``: fail
    before training when the evaluation that follows (``run``) would find no test split.
    """
    recipe = _as_recipe(recipe, overrides)
    run_dir = _check_run_dir(recipe, resume, overwrite)
    # verified before any work; previous.ckpt (with a warning) when last.ckpt is damaged
    resume_from, resume_step = resume_checkpoint(last_checkpoint(run_dir)) if resume else (None, 0)
    # bad data fails here, before an existing run dir is touched; a resumed run reads the files it listed
    data = build_data(recipe.data, listing_dir=run_dir if resume else None)
    if require_test:
        _check_eval_data(recipe, data)
    _prepare_run_dir(run_dir, resume, overwrite)
    if launch_rank_zero():
        recipe.save(run_dir / "recipe.yaml")
        data.save_listings(run_dir)
    pl.seed_everything(recipe.seed, workers=True, verbose=False)

    backbone = build_backbone(
        recipe.backbone.name, data.input_shape, recipe.backbone.pretrained, recipe.backbone.kwargs
    )
    method = build_method(recipe.method, backbone, data.input_shape, data.mean, data.std)
    method.joint_views = recipe.trainer.joint_views
    method.num_local_views = local_views(recipe, method)
    precision = _safe_precision(
        recipe.trainer, method, data.input_shape, recipe.augment.local_image_size(data.image_size)
    )
    if recipe.trainer.channels_last:
        to_channels_last(method)
    if recipe.trainer.compile:
        compile_children(method)
    train_set, augments, local_augment = training_views(recipe.augment, data, method.num_views)
    decode_to = None
    if recipe.data.decode == "device" and isinstance(train_set, FileDataset) and train_set.transform is None:
        train_set = train_set.take(range(len(train_set)))  # its own copy: evaluation and the monitor decode on CPU
        train_set.decode = "device"
        decode_to = (data.channels, data.image_size)
    plot_images = first_images(data.train, 8) if recipe.logging.plots else None
    loader = make_train_loader(train_set, recipe.data.batch_size, seed=recipe.seed, num_workers=recipe.data.num_workers)
    module = PretrainModule(
        method,
        augments,
        data.mean,
        data.std,
        recipe.optim,
        run_dir / "plots" if recipe.logging.plots else None,
        plot_images,
        sampler=loader.batch_sampler if isinstance(loader.batch_sampler, GlobalBatchSampler) else None,
        seed=recipe.seed,
        check_finite=recipe.trainer.stop_on_nonfinite,
        check_grads=precision != "16-mixed",  # fp16's loss scaler skips steps with inf gradients by design
        channels_last=recipe.trainer.channels_last,
        local_augment=local_augment,
        decode_to=decode_to,
    )

    monitor = build_monitor(recipe, data, run_dir)
    if monitor is not None:
        callbacks = [monitor, *(callbacks or [])]
    ckpt_path = last_checkpoint(run_dir)
    if resume and launch_rank_zero():
        truncate_after(run_dir / "metrics.jsonl", resume_step)  # records past the checkpoint will be logged again
    trainer = build_trainer(recipe, run_dir, callbacks=callbacks, precision=precision)
    try:
        _fit(trainer, module, loader, resume_from, ckpt_path, run_dir)
    finally:
        _finish_wandb(recipe)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    failures = getattr(train_set, "read_failures", 0) + module.decode_failures
    if failures:  # files that passed the listing (large folders are verified as they are read) but not decoding
        log.warning("data: %d image reads failed and were replaced by the next readable file", failures)
        metrics["data/read_failures"] = float(failures)
    to_contiguous(uncompile(method))
    if trainer.is_global_zero:
        save_run_encoder(run_dir, recipe, backbone, method, data, metrics)
        if recipe.logging.plots:
            plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "plots" / "loss.png")
            if monitor is not None:
                plot_monitor(run_dir / "metrics.jsonl", run_dir / "plots" / "monitor.png")
    return RunResult(run_dir, metrics, data, precision)


def _fit(
    trainer: pl.Trainer,
    module: PretrainModule,
    loader: Any,
    resume_from: Path | None,
    ckpt_path: Path,
    run_dir: Path,
) -> None:
    """``trainer.fit`` without Lightning's warnings that do not apply here; a non-finite loss names the last good
    checkpoint, a SIGTERM/SIGINT becomes :class:`Stopped` with the command that resumes."""
    module.train()  # what Lightning trains; a method's own train() keeps its frozen parts in eval (distill's teacher)
    kept_in_eval = sum(not m.training for m in module.modules())
    try:
        with warnings.catch_warnings():
            if kept_in_eval:  # exactly those modules, by design: any other module left in eval is still reported
                warnings.filterwarnings("ignore", message=rf"Found {kept_in_eval} module\(s\) in eval mode")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")  # Lightning vs torch 2.14
            # our sampler's position is in the checkpoint (PretrainModule), which Lightning cannot see
            warnings.filterwarnings(
                "ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*"
            )
            trainer.fit(module, train_dataloaders=loader, ckpt_path=str(resume_from) if resume_from else None)
    except NonFiniteError as e:
        raise NonFiniteError(f"{e}; {_last_good(ckpt_path)}", e.step) from None
    except SystemExit:  # Lightning's SIGTERMException after the step in flight
        stop = next((c for c in cast(Any, trainer).callbacks if isinstance(c, StopOnSignal)), None)
        if stop is None or stop.signum is None:
            raise
        step = trainer.global_step
        raise Stopped(
            f"{signal_name(stop.signum)} at step {step}: checkpoint {ckpt_path} written; continue with "
            f"`ssl-transfer pretrain {run_dir} --resume` (or `run ... --resume`)",
            stop.signum,
            step,
        ) from None


def build_monitor(recipe: Recipe, data: DataBundle, run_dir: Path) -> Monitor | None:
    """The online monitor for ``recipe.monitor`` on ``data``'s test split, or None when it is off (``auto``: on
    when there is a test split)."""
    cfg = recipe.monitor
    if cfg.enabled is False or (data.test is None and cfg.enabled == "auto"):
        return None
    if data.test is None:
        raise UserError(
            "monitor.enabled=true: the data has no test split to monitor on; set data.test_root or monitor.enabled=auto"
        )
    # evenly spread over the split (image folders list their files class by class)
    idx = torch.linspace(0, len(data.test) - 1, min(cfg.val_samples, len(data.test))).round().long().unique()
    if isinstance(data.test, ArrayDataset):
        images, labels = data.test.images[idx], data.test.labels[idx]
    else:  # a file dataset: decode the chosen images
        images = torch.stack([data.test[int(i)][0] for i in idx])
        labels = torch.as_tensor([data.test.labels[int(i)] for i in idx], dtype=torch.long)
    known = labels if bool((labels >= 0).all()) else None  # kNN only when every monitored image is labelled
    best = run_dir / "checkpoints" / "best.ckpt" if cfg.save_best and known is not None else None
    return Monitor(cfg, images, known, recipe.eval.knn.k, recipe.eval.knn.temperature, best)


def _last_good(ckpt_path: Path) -> str:
    if not ckpt_path.is_file():
        return "no checkpoint had been written yet"
    step = torch.load(ckpt_path, map_location="cpu", weights_only=True).get("global_step")
    return (
        f"the last good checkpoint is {ckpt_path} (step {step}); consider a lower optim.lr or trainer.gradient_clip_val"
    )


def _finish_wandb(recipe: Recipe) -> None:
    if recipe.logging.wandb != "disabled":
        import wandb

        if wandb.run is not None:
            wandb.finish()


def evaluate_run(run_dir: str | Path, recipe: Recipe, data: DataBundle | None = None) -> dict[str, Any]:
    """The recipe's ``eval`` section through the shared evaluator, on the exported encoder. ``data``: the bundle
    pretraining built from ``recipe.data`` (not built again); ignored when the eval section names its own data.

    Writes eval.json, report.md (and label_efficiency.png for several budgets) into the run dir and the
    summary into encoder.json's ``eval_metrics``.
    """
    from ssl_transfer.evaluation.protocol import evaluate

    run_dir = Path(run_dir)
    source = recipe.eval.data or (data if data is not None else recipe.data)
    result = evaluate(run_dir, source, recipe.eval, out_dir=run_dir)
    meta_path = run_dir / "encoder.json"
    meta = json.loads(meta_path.read_text())
    meta["eval_metrics"] = {"data": result["data"]["source"], "summary": result["summary"]}
    meta_path.write_text(json.dumps(meta, indent=2))
    return result


def headline(result: dict[str, Any], protocol: str = "knn") -> dict[str, Any] | None:
    """The all-labels, first-seed row of ``protocol`` in an evaluation result."""
    return next((r for r in result["rows"] if r["protocol"] == protocol and r["labels_per_class"] is None), None)


def run(
    recipe: Recipe | str | Path | dict,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Pretrain, then evaluate (the recipe's ``eval`` section), then export (its ``export`` section)."""
    res = pretrain(recipe, overrides, resume=resume, overwrite=overwrite, require_test=True)
    recipe = load_recipe(res.run_dir / "recipe.yaml")
    if not launch_rank_zero():  # DDP workers stop after training; rank 0 evaluates
        return res
    res.metrics["eval"] = evaluate_run(res.run_dir, recipe, res.data)  # the data pretraining built, not built again
    res.metrics["exports"] = export_run(res.run_dir, recipe)
    return res


def export_run(run_dir: str | Path, recipe: Recipe) -> dict[str, str]:
    """The recipe's ``export.formats`` into ``<run dir>/export/`` (the run dir's encoder.safetensors is always
    there); each export carries the run's metadata, eval metrics included, and is checked on reload."""
    run_dir = Path(run_dir)
    written = {"safetensors": str(run_dir / "encoder.safetensors")}
    for fmt in recipe.export.formats:
        if fmt != "safetensors":
            written[fmt] = str(export_encoder(run_dir, fmt, default_export_path(run_dir, fmt)).path)
    return written


def first_and_last_loss(run_dir: str | Path) -> tuple[float, float]:
    """Mean training loss of the first and of the last epoch, from metrics.jsonl."""
    ep = [r["train/loss_epoch"] for r in read_metrics(Path(run_dir) / "metrics.jsonl") if "train/loss_epoch" in r]
    if not ep:
        raise ValueError(f"no epoch losses in {run_dir}/metrics.jsonl")
    return ep[0], ep[-1]
