"""Keys of the trainers' per-iteration outputs (``engine.state.output``)."""

from __future__ import annotations

from medgan.keys import StrEnum


class TranslationKeys(StrEnum):
    """Output keys of :class:`~medgan.engines.paired.PairedGANTrainer` (losses are Python floats,
    images are detached tensors ``(B, C, X, Y, Z)``)."""

    SOURCE = "source"
    TARGET = "target"
    PRED = "pred"
    D_LOSS = "d_loss"
    D_REAL_LOGIT = "d_real_logit"  # mean logit on real pairs
    D_FAKE_LOGIT = "d_fake_logit"
    G_ADV_LOSS = "g_adv_loss"
    G_L1_LOSS = "g_l1_loss"
    G_SSIM_LOSS = "g_ssim_loss"
    G_GDL_LOSS = "g_gdl_loss"
    G_LOSS = "g_loss"


class CycleKeys(StrEnum):
    """Output keys of :class:`~medgan.engines.cyclegan.CycleGANTrainer`."""

    REAL_SOURCE = "real_source"
    REAL_TARGET = "real_target"
    FAKE_TARGET = "fake_target"  # G_source_to_target(real_source)
    FAKE_SOURCE = "fake_source"  # G_target_to_source(real_target)
    G_ADV_TARGET_LOSS = "g_adv_target_loss"
    G_ADV_SOURCE_LOSS = "g_adv_source_loss"
    CYCLE_SOURCE_LOSS = "cycle_source_loss"
    CYCLE_TARGET_LOSS = "cycle_target_loss"
    IDENTITY_SOURCE_LOSS = "identity_source_loss"
    IDENTITY_TARGET_LOSS = "identity_target_loss"
    G_LOSS = "g_loss"
    D_TARGET_LOSS = "d_target_loss"
    D_SOURCE_LOSS = "d_source_loss"


LOSS_KEYS = tuple(k for k in (*TranslationKeys, *CycleKeys) if str(k).endswith("_loss"))
