"""Python entry points: train a paired (pix2pix) or CycleGAN model with explicit arguments.

Both take in-memory cases (dicts of channel-first arrays already scaled for the network; pipelines
do the reading and intensity scaling) and write into ``output_dir``: ``losses.csv``,
``validation.csv``, ``snapshots/*.png``, ``tensorboard/``, ``checkpoints/checkpoint_*.pt`` and
``generator.pt`` (the EMA generator's ``state_dict``, or the raw one without EMA). Under
``torchrun --nproc_per_node=N`` they train with DDP; only rank 0 writes.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from ignite.engine import Events
from monai.utils import set_determinism
from torch.utils.data import DataLoader

from medgan.engines.base import TranslationTrainer
from medgan.engines.cyclegan import CycleGANTrainer
from medgan.engines.distributed import cleanup_distributed, process_group_needed, setup_distributed, wrap_ddp
from medgan.engines.paired import PairedGANTrainer
from medgan.engines.patches import IterationSampler, PairedPatchDataset, UnpairedPatchDataset, paired_patch_transform
from medgan.handlers.checkpoint import TrainingCheckpointer, latest_checkpoint, load_checkpoint
from medgan.handlers.ema import GeneratorEMA
from medgan.handlers.loss_logger import LossLogger
from medgan.handlers.validation import TranslationValidator
from medgan.inferers.sliding_window import make_sliding_window_inferer
from medgan.keys import Keys
from medgan.losses import AdversarialLoss, CycleConsistencyLoss, GradientPenalty, TranslationLoss
from medgan.networks import PatchDiscriminator, ResidualUNet, ResnetGenerator, max_discriminator_layers
from medgan.utils.atomic import atomic_path

logger = logging.getLogger(__name__)

Case = Mapping[str, Any]


def _loader(dataset: torch.utils.data.Dataset, batch_size: int, rank: int, world_size: int,
            num_workers: int) -> DataLoader:
    sampler = IterationSampler(batch_size, rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)


def _run(trainer: TranslationTrainer, objects: dict[str, Any], output_dir: Path, iterations: int,
         checkpoint_every: int, resume: bool, progress: bool, log_every: int) -> None:
    """Attach logging/checkpoint/progress handlers, restore the latest checkpoint, train, clean up."""
    rank = trainer.state.rank
    LossLogger(output_dir / "losses.csv", output_dir / "tensorboard", every=log_every).attach(trainer)
    TrainingCheckpointer(output_dir / "checkpoints", objects, every_n_iterations=checkpoint_every).attach(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=iterations), lambda engine: engine.terminate())
    if progress and rank == 0:
        from ignite.handlers import ProgressBar

        from medgan.handlers.loss_logger import scalar_outputs

        ProgressBar(persist=True).attach(trainer, output_transform=scalar_outputs)
    max_epochs = trainer.state.max_epochs
    found = latest_checkpoint(output_dir / "checkpoints") if resume else None
    if found is not None:
        load_checkpoint(found, objects, map_location=str(trainer.state.device))
        trainer.state.max_epochs = max_epochs  # the checkpoint's schedule may have been shorter
        logger.info("resuming at iteration %d from %s", trainer.state.iteration, found)
    if trainer.state.iteration >= iterations:
        logger.info("already trained for %d iterations; nothing to do", trainer.state.iteration)
        return
    trainer.run()


def _save_generator(path: Path, network: torch.nn.Module, rank: int) -> None:
    if rank != 0:
        return
    with atomic_path(path) as tmp:
        torch.save(network.state_dict(), tmp)


def train_paired(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    output_dir: str | os.PathLike[str],
    iterations: int = 1000,
    patch_size_vox: Sequence[int] = (64, 64, 32),
    batch_size: int = 2,
    generator_filters: Sequence[int] = (16, 32, 64, 128),
    generator_norm: str = "instance",
    discriminator_channels: int = 16,
    discriminator_layers: int | None = None,
    adversarial_mode: str = "least_squares",
    adversarial_weight: float = 1.0,
    l1_weight: float = 100.0,
    ssim_weight: float = 0.0,
    gdl_weight: float = 0.0,
    gradient_penalty_weight: float = 0.0,
    learning_rate: float = 2e-4,
    ema_decay: float = 0.999,
    weight_key: str | None = None,
    value_scale: float = 1000.0,
    value_offset: float = 0.0,
    data_range: float = 4000.0,
    window: Sequence[float] = (-1000.0, 1000.0),
    diff_range: float = 200.0,
    validate_every: int = 100,
    checkpoint_every: int = 100,
    epoch_length: int = 100,
    sw_overlap: float = 0.25,
    precision: str = "fp32",
    device: str = "auto",
    seed: int = 0,
    num_workers: int = 0,
    resume: bool = True,
    progress: bool = True,
    log_every: int = 1,
) -> dict[str, Any]:
    """Train a pix2pix model (residual U-Net generator, conditional PatchGAN) on paired volumes.

    Args:
        train_cases: dicts with ``source``, ``target`` (and ``weight_key`` if given) arrays
            ``(1, X, Y, Z)`` on one grid, in network units (physical = value * value_scale + value_offset).
        val_cases: held-out dicts of the same form, inferred whole with a sliding window.
        output_dir: run folder (resumed from its latest checkpoint when ``resume``).
        iterations: total generator updates.
        patch_size_vox: training patch ``(X, Y, Z)``, divisible by ``2 ** (len(generator_filters) - 1)``.
        batch_size: patches per iteration per process.
        generator_filters: U-Net channels per level.
        generator_norm: the U-Net's normalisation (MONAI norm name): ``"instance"`` normalises each window,
            so a sliding window's output depends on the window layout; ``"batch"`` becomes a fixed affine
            map in evaluation, so the output does not depend on it (beyond the convolutions' zero padding).
        discriminator_channels: first-layer channels of the PatchGAN.
        discriminator_layers: stride-2 layers (default: the deepest the patch allows, at most 3).
        adversarial_mode: ``least_squares``, ``hinge``, ``non_saturating`` or ``wasserstein``.
        adversarial_weight: weight of the generator's adversarial term.
        l1_weight: weight of L1.
        ssim_weight: weight of ``1 - SSIM``.
        gdl_weight: weight of the gradient-difference loss.
        gradient_penalty_weight: WGAN-GP weight (0: none).
        learning_rate: Adam learning rate of both networks (betas 0.5, 0.999 as in pix2pix).
        ema_decay: generator EMA decay (0 disables EMA; validation and ``generator.pt`` use the EMA).
        weight_key: case key of a sampling-weight map (e.g. ``body_mask``) for foreground-weighted crops.
        value_scale: network -> physical scale (HU = value * value_scale + value_offset).
        value_offset: network -> physical offset.
        data_range: PSNR peak in physical units.
        window: PNG display window, physical units.
        diff_range: PNG difference window, physical units.
        validate_every: validation period (iterations).
        checkpoint_every: checkpoint period (iterations).
        epoch_length: iterations per (nominal) epoch; the sampler is endless.
        sw_overlap: sliding-window overlap for validation.
        precision: ``fp32``, ``bf16`` or ``fp16`` (CUDA).
        device: ``auto``, ``cpu``, ``cuda``.
        seed: seeds network initialisation, patch draws and in-step randomness.
        num_workers: DataLoader workers (results do not depend on it).
        resume: continue from ``output_dir/checkpoints`` when present.
        progress: show a progress bar with the losses.
        log_every: loss-log period (iterations).

    Returns:
        ``{"output_dir", "generator_path", "iterations", "validation", "generator", "final_generator"}``:
        the last validation means, the trained generator and the one saved (EMA when enabled).
    """
    out = Path(output_dir)
    owns_group = process_group_needed()  # a group the caller set up is left to the caller
    device_, rank, world_size = setup_distributed(device)
    try:
        set_determinism(seed=seed)
        patch = tuple(int(s) for s in patch_size_vox)
        layers = discriminator_layers if discriminator_layers is not None else min(3, max_discriminator_layers(patch))
        generator = ResidualUNet(1, 1, filters=generator_filters, norm=generator_norm).to(device_)
        discriminator = PatchDiscriminator(2, channels=discriminator_channels, num_layers=layers).to(device_)
        ema = GeneratorEMA(generator, decay=ema_decay) if ema_decay > 0 else None
        g_ddp, d_ddp = wrap_ddp(generator, device_), wrap_ddp(discriminator, device_)
        g_opt = torch.optim.Adam(generator.parameters(), lr=learning_rate, betas=(0.5, 0.999))
        d_opt = torch.optim.Adam(discriminator.parameters(), lr=learning_rate, betas=(0.5, 0.999))
        keys = (Keys.SOURCE, Keys.TARGET)
        dataset = PairedPatchDataset(train_cases, paired_patch_transform(patch, keys, weight_key), seed=seed)
        trainer = PairedGANTrainer(
            device=device_,
            max_epochs=math.ceil(iterations / epoch_length),
            train_data_loader=_loader(dataset, batch_size, rank, world_size, num_workers),
            generator=g_ddp,
            discriminator=d_ddp,
            g_optimizer=g_opt,
            d_optimizer=d_opt,
            epoch_length=epoch_length,
            adversarial_loss=AdversarialLoss(adversarial_mode),
            reconstruction_loss=TranslationLoss(l1_weight=l1_weight, ssim_weight=ssim_weight, gdl_weight=gdl_weight),
            adversarial_weight=adversarial_weight,
            gradient_penalty=GradientPenalty(gradient_penalty_weight) if gradient_penalty_weight > 0 else None,
            precision=precision,
            seed=seed,
        )
        objects = trainer.checkpoint_objects()
        if ema is not None:
            ema.attach(trainer)
            objects["ema"] = ema
        final_network = ema.network if ema is not None else generator
        validator = None
        if val_cases:
            validator = TranslationValidator(
                val_cases, final_network, make_sliding_window_inferer(patch, overlap=sw_overlap, device=str(device_)),
                out, every_n_iterations=validate_every, value_scale=value_scale, value_offset=value_offset,
                data_range=data_range, precision=precision, window=window, diff_range=diff_range,
                tensorboard_dir=out / "tensorboard")
            validator.attach(trainer)
        _run(trainer, objects, out, iterations, checkpoint_every, resume, progress, log_every)
        _save_generator(out / "generator.pt", final_network, rank)
        return {"output_dir": out, "generator_path": out / "generator.pt", "iterations": trainer.state.iteration,
                "validation": dict(trainer.state.metrics), "generator": generator, "final_generator": final_network}
    finally:
        if owns_group:
            cleanup_distributed()


def train_cyclegan(
    source_cases: Sequence[Case],
    target_cases: Sequence[Case],
    output_dir: str | os.PathLike[str],
    iterations: int = 1000,
    patch_size_vox: Sequence[int] = (64, 64, 32),
    batch_size: int = 1,
    generator_channels: int = 16,
    generator_blocks: int = 4,
    discriminator_channels: int = 16,
    discriminator_layers: int | None = None,
    adversarial_mode: str = "least_squares",
    cycle_weight: float = 10.0,
    identity_weight: float = 5.0,
    pool_size: int = 50,
    learning_rate: float = 2e-4,
    ema_decay: float = 0.999,
    weight_key: str | None = None,
    val_cases: Sequence[Case] = (),
    validate_every: int = 200,
    value_scale: float = 2047.5,
    value_offset: float = 1023.5,
    source_value_scale: float = 1.0,
    source_value_offset: float = 0.0,
    tissue_classes: Mapping[str, Sequence[float]] | None = None,
    window: Sequence[float] = (-1000.0, 1500.0),
    source_window: Sequence[float] = (-1.0, 1.0),
    sw_overlap: float = 0.25,
    checkpoint_every: int = 100,
    epoch_length: int = 100,
    precision: str = "fp32",
    device: str = "auto",
    seed: int = 0,
    num_workers: int = 0,
    resume: bool = True,
    progress: bool = True,
    log_every: int = 1,
) -> dict[str, Any]:
    """Train a CycleGAN (ResNet generators with tanh output, PatchGAN discriminators) on unpaired volumes.

    Args:
        source_cases: dicts with ``source`` ``(1, X, Y, Z)`` scaled to [-1, 1] (and ``weight_key``).
        target_cases: dicts with ``target`` ``(1, X, Y, Z)`` scaled to [-1, 1] (and ``weight_key``).
        output_dir: run folder (resumed from its latest checkpoint when ``resume``).
        iterations: total updates.
        patch_size_vox: training patch, divisible by 4.
        batch_size: patches per domain per iteration per process.
        generator_channels: stem channels of each ResNet generator.
        generator_blocks: residual blocks per generator.
        discriminator_channels: first-layer channels of each PatchGAN.
        discriminator_layers: stride-2 layers (default: deepest the patch allows, at most 3).
        adversarial_mode: GAN objective.
        cycle_weight: weight of each cycle term.
        identity_weight: weight of each identity term (0 disables).
        pool_size: image history per discriminator.
        learning_rate: Adam learning rate (betas 0.5, 0.999).
        ema_decay: EMA decay of ``G_source_to_target`` (0 disables).
        weight_key: sampling-weight key for foreground-weighted crops.
        val_cases: whole volumes to translate every ``validate_every`` iterations: dicts with ``source``
            (and ``body_mask``; a ``target`` on the source's grid adds MAE/RMSE/PSNR). Unpaired cases
            get the fractions of ``tissue_classes`` in the (masked) output and a PNG snapshot
            (:class:`medgan.handlers.validation.TranslationValidator`). Empty: no validation.
        validate_every: validation period (iterations).
        value_scale: network -> physical scale of the output and target (default: [-1, 1] -> HU
            window [-1024, 3071]).
        value_offset: network -> physical offset.
        source_value_scale: network -> display units of the source (MR: keep the normalised units).
        source_value_offset: see ``source_value_scale``.
        tissue_classes: ``{name: (low, high)}`` in physical units logged as fractions (None: none).
        window: PNG display window of output and target, physical units.
        source_window: PNG display window of the source, its display units.
        sw_overlap: sliding-window overlap for validation.
        checkpoint_every: checkpoint period.
        epoch_length: iterations per nominal epoch.
        precision: ``fp32``, ``bf16`` or ``fp16`` (CUDA).
        device: ``auto``, ``cpu``, ``cuda``.
        seed: seeds everything random.
        num_workers: DataLoader workers.
        resume: continue from the latest checkpoint.
        progress: progress bar.
        log_every: loss-log period.

    Returns:
        ``{"output_dir", "generator_path", "iterations", "validation", "generator", "final_generator"}``;
        ``generator.pt`` holds (the EMA of) ``G_source_to_target``.
    """
    out = Path(output_dir)
    owns_group = process_group_needed()  # a group the caller set up is left to the caller
    device_, rank, world_size = setup_distributed(device)
    try:
        set_determinism(seed=seed)
        patch = tuple(int(s) for s in patch_size_vox)
        layers = discriminator_layers if discriminator_layers is not None else min(3, max_discriminator_layers(patch))

        def generator() -> torch.nn.Module:
            return ResnetGenerator(1, 1, base_channels=generator_channels, num_blocks=generator_blocks).to(device_)

        def discriminator() -> torch.nn.Module:
            return PatchDiscriminator(1, channels=discriminator_channels, num_layers=layers).to(device_)

        g_s2t, g_t2s, d_source, d_target = generator(), generator(), discriminator(), discriminator()
        ema = GeneratorEMA(g_s2t, decay=ema_decay) if ema_decay > 0 else None
        g_opt = torch.optim.Adam([*g_s2t.parameters(), *g_t2s.parameters()], lr=learning_rate, betas=(0.5, 0.999))
        d_opt = torch.optim.Adam([*d_source.parameters(), *d_target.parameters()], lr=learning_rate,
                                 betas=(0.5, 0.999))
        dataset = UnpairedPatchDataset(
            source_cases, target_cases,
            paired_patch_transform(patch, [Keys.SOURCE], weight_key),
            paired_patch_transform(patch, [Keys.TARGET], weight_key), seed=seed)
        trainer = CycleGANTrainer(
            device=device_,
            max_epochs=math.ceil(iterations / epoch_length),
            train_data_loader=_loader(dataset, batch_size, rank, world_size, num_workers),
            g_source_to_target=wrap_ddp(g_s2t, device_),
            g_target_to_source=wrap_ddp(g_t2s, device_),
            d_source=wrap_ddp(d_source, device_),
            d_target=wrap_ddp(d_target, device_),
            g_optimizer=g_opt,
            d_optimizer=d_opt,
            epoch_length=epoch_length,
            adversarial_loss=AdversarialLoss(adversarial_mode),
            cycle_loss=CycleConsistencyLoss(cycle_weight, identity_weight),
            pool_size=pool_size,
            precision=precision,
            seed=seed,
        )
        objects = trainer.checkpoint_objects()
        if ema is not None:
            ema.attach(trainer)
            objects["ema"] = ema
        final_network = ema.network if ema is not None else g_s2t
        if val_cases:
            TranslationValidator(
                val_cases, final_network, make_sliding_window_inferer(patch, overlap=sw_overlap, device=str(device_)),
                out, every_n_iterations=validate_every, value_scale=value_scale, value_offset=value_offset,
                data_range=value_scale * 2.0, precision=precision, window=window, tensorboard_dir=out / "tensorboard",
                tissue_classes=tissue_classes, source_value_scale=source_value_scale,
                source_value_offset=source_value_offset, source_window=source_window).attach(trainer)
        _run(trainer, objects, out, iterations, checkpoint_every, resume, progress, log_every)
        _save_generator(out / "generator.pt", final_network, rank)
        return {"output_dir": out, "generator_path": out / "generator.pt", "iterations": trainer.state.iteration,
                "validation": dict(trainer.state.metrics), "generator": g_s2t, "final_generator": final_network}
    finally:
        if owns_group:
            cleanup_distributed()
