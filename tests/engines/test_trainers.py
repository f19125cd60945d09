"""Trainers end to end on tiny networks: exact resume, outputs, precision, EMA, image pool, inferer."""

from __future__ import annotations

import csv

import pytest
import torch
from monai.handlers import CheckpointLoader

from medgan.engines import CycleGANTrainer, ImagePool, PairedGANTrainer
from medgan.engines.train import train_cyclegan, train_paired
from medgan.errors import MedganError
from medgan.handlers import GeneratorEMA, latest_checkpoint
from medgan.inferers import make_sliding_window_inferer, predict_volume
from medgan.networks import PatchDiscriminator, ResidualUNet

from .conftest import TINY_CYCLE, TINY_PAIRED


def _losses(path):
    with open(path, newline="") as handle:
        return {int(row["iteration"]): row for row in csv.DictReader(handle)}


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_paired_resume_is_exact(tmp_path, offset_cases):
    train, _ = offset_cases
    options = dict(epoch_length=3, checkpoint_every=2, **TINY_PAIRED)
    whole = train_paired(train, [], tmp_path / "whole", iterations=4, **options)
    train_paired(train, [], tmp_path / "split", iterations=2, **options)
    assert latest_checkpoint(tmp_path / "split" / "checkpoints").name == "checkpoint_00000002.pt"
    # a fresh call (new networks, optimisers, loader) continues from the checkpoint, mid-epoch
    resumed = train_paired(train, [], tmp_path / "split", iterations=4, **options)
    assert resumed["iterations"] == 4
    expected, got = _losses(tmp_path / "whole" / "losses.csv"), _losses(tmp_path / "split" / "losses.csv")
    assert sorted(got) == list(range(1, 5))
    for iteration in range(1, 5):
        assert got[iteration] == expected[iteration], iteration
    assert float(expected[4]["d_loss"]) != float(expected[3]["d_loss"])  # the losses move: the test can fail
    _assert_same_weights(whole["generator"], resumed["generator"])
    _assert_same_weights(whole["final_generator"], resumed["final_generator"])  # EMA too


def test_cyclegan_resume_is_exact_with_image_pool(tmp_path, offset_cases):
    train, _ = offset_cases
    sources = [{"source": c["source"]} for c in train]
    targets = [{"target": c["target"]} for c in train]
    options = dict(iterations=4, epoch_length=3, checkpoint_every=2, pool_size=1, **TINY_CYCLE)
    options["patch_size_vox"] = (8, 8, 8)
    whole = train_cyclegan(sources, targets, tmp_path / "whole", **options)
    train_cyclegan(sources, targets, tmp_path / "split", **{**options, "iterations": 2})
    resumed = train_cyclegan(sources, targets, tmp_path / "split", **options)
    expected, got = _losses(tmp_path / "whole" / "losses.csv"), _losses(tmp_path / "split" / "losses.csv")
    assert got == expected
    assert {"cycle_source_loss", "identity_target_loss", "d_source_loss", "g_adv_target_loss"} <= set(got[1])
    _assert_same_weights(whole["generator"], resumed["generator"])


def test_cyclegan_validation_logs_class_fractions_and_snapshots(tmp_path, offset_cases):
    """Unpaired validation: tissue-class fractions of the whole-volume output in the body mask, a PNG
    per case and validation; a case with a target also gets its errors."""
    train, held_out = offset_cases
    sources = [{"source": c["source"]} for c in train]
    targets = [{"target": c["target"]} for c in train]
    body = (held_out[0]["target"] > held_out[0]["target"].median()).float()
    classes = {"low": (-1e9, 0.0), "high": (0.0, 1e9)}
    val = [{"source": held_out[0]["source"], "body_mask": body},
           {"source": held_out[0]["source"], "target": held_out[0]["target"]}]
    result = train_cyclegan(sources, targets, tmp_path, iterations=2, epoch_length=2, checkpoint_every=2,
                            val_cases=val, validate_every=1, value_scale=1.0, value_offset=0.0,
                            tissue_classes=classes, **{**TINY_CYCLE, "patch_size_vox": (8, 8, 8)})
    with open(tmp_path / "validation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    generated = [r for r in rows if r["model"] == "generator"]
    assert [(r["iteration"], r["case"]) for r in generated] == [("1", "case0"), ("1", "case1"), ("2", "case0"),
                                                                ("2", "case1")]
    assert [r["case"] for r in rows if r["model"] == "input"] == ["case1"]  # only the case with a target
    for row in generated:
        assert float(row["low_fraction"]) + float(row["high_fraction"]) == pytest.approx(1.0)
        assert (row["rmse"] == "") == (row["case"] == "case0")
    # the masked fractions are those of the generator's output inside the mask
    pred = predict_volume(result["final_generator"], val[0]["source"],
                          make_sliding_window_inferer((8, 8, 8), overlap=0.25, device="cpu"))
    expected = float((pred[0][body[0] > 0] >= 0).float().mean())
    assert float(generated[-2]["high_fraction"]) == pytest.approx(expected, abs=1e-4)
    assert result["validation"]["val_high_fraction"] == pytest.approx(
        (expected + float(generated[-1]["high_fraction"])) / 2, abs=1e-4)
    assert len(list((tmp_path / "snapshots").glob("case0_iter*.png"))) == 2


def test_paired_training_improves_held_out_volume_and_writes_outputs(tmp_path, offset_cases):
    train, held_out = offset_cases
    result = train_paired(train, held_out, tmp_path, iterations=16, epoch_length=8, validate_every=8,
                          checkpoint_every=8, learning_rate=1e-2, ema_decay=0.5, **TINY_PAIRED)
    with open(tmp_path / "validation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    baseline = [float(r["rmse"]) for r in rows if r["model"] == "input"]
    trained = [float(r["rmse"]) for r in rows if r["model"] == "generator"]
    assert baseline == [pytest.approx(300.0, rel=1e-4)]  # 0.3 network units at value_scale 1000
    assert len(trained) == 2 and trained[-1] < 0.7 * baseline[0], trained
    assert result["validation"]["val_rmse"] == pytest.approx(trained[-1], rel=1e-5)
    pngs = sorted((tmp_path / "snapshots").glob("*.png"))
    assert len(pngs) == 2 and pngs[0].read_bytes()[:4] == b"\x89PNG"
    assert any((tmp_path / "tensorboard").iterdir())
    # generator.pt loads into a fresh network; the checkpoint loads with MONAI's CheckpointLoader
    network = ResidualUNet(1, 1, filters=(4, 8, 16))
    network.load_state_dict(torch.load(tmp_path / "generator.pt", weights_only=True))
    _assert_same_weights(network, result["final_generator"])
    fresh = ResidualUNet(1, 1, filters=(4, 8, 16))
    loader = CheckpointLoader(str(latest_checkpoint(tmp_path / "checkpoints")), {"generator": fresh})
    loader(type("E", (), {"state": type("S", (), {"max_epochs": None, "epoch": 0})()})())
    _assert_same_weights(fresh, result["generator"])


def _tiny_paired_trainer(precision: str, loader) -> PairedGANTrainer:
    torch.manual_seed(0)
    g, d = ResidualUNet(1, 1, filters=(4, 8, 16)), PatchDiscriminator(2, channels=4, num_layers=2)
    return PairedGANTrainer("cpu", 1, loader, g, d, torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters()),
                            epoch_length=2, precision=precision)


def test_bf16_autocast_on_cpu_and_fp16_refused():
    x = torch.randn(1, 1, 16, 16, 16)
    loader = [{"source": x, "target": x + 0.1}] * 2
    trainer = _tiny_paired_trainer("bf16", loader)
    dtypes = []
    trainer.state.generator.unet.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    ema = GeneratorEMA(trainer.state.generator, decay=0.5, warmup=False)
    ema.attach(trainer)
    before = [p.clone() for p in ema.network.parameters()]
    trainer.run()
    out = trainer.state.output
    assert dtypes == [torch.bfloat16, torch.bfloat16]  # the U-Net ran under bf16 autocast
    assert all(torch.isfinite(torch.tensor(v)) for k, v in out.items() if k.endswith("loss"))
    assert all(torch.isfinite(p).all() for p in trainer.state.discriminator.parameters())
    moved = [not torch.equal(a, b) for a, b in zip(before, ema.network.parameters())]
    assert any(moved) and ema.num_updates == 2
    with pytest.raises(MedganError, match="fp16 needs a CUDA device"):
        _tiny_paired_trainer("fp16", loader)


def test_cyclegan_trainer_events_and_keys():
    from monai.utils import AdversarialIterationEvents as Events

    from medgan.engines import CycleKeys
    from medgan.networks import ResnetGenerator

    torch.manual_seed(0)
    gens = [ResnetGenerator(1, 1, base_channels=2, num_blocks=1) for _ in range(2)]
    discs = [PatchDiscriminator(1, channels=2, num_layers=1) for _ in range(2)]
    batch = {"source": torch.rand(1, 1, 8, 8, 8), "target": torch.rand(1, 1, 8, 8, 8)}
    trainer = CycleGANTrainer("cpu", 1, [batch], *gens, *discs,
                              torch.optim.Adam([p for g in gens for p in g.parameters()]),
                              torch.optim.Adam([p for d in discs for p in d.parameters()]), epoch_length=1,
                              pool_size=2)
    fired = []
    for event in (Events.GENERATOR_FORWARD_COMPLETED, Events.GENERATOR_MODEL_COMPLETED,
                  Events.DISCRIMINATOR_MODEL_COMPLETED):
        trainer.add_event_handler(event, lambda engine, e=event: fired.append(e))
    trainer.run()
    assert fired == [Events.GENERATOR_FORWARD_COMPLETED, Events.GENERATOR_MODEL_COMPLETED,
                     Events.DISCRIMINATOR_MODEL_COMPLETED]
    assert trainer.state.output[CycleKeys.FAKE_TARGET].shape == (1, 1, 8, 8, 8)
    assert len(trainer.fake_target_pool.images) == 1


def test_image_pool_keeps_history_and_round_trips():
    torch.manual_seed(0)
    pool = ImagePool(pool_size=2)
    first = pool.query(torch.zeros(2, 1, 2, 2, 2))
    assert torch.equal(first, torch.zeros(2, 1, 2, 2, 2)) and len(pool.images) == 2
    drawn = torch.cat([pool.query(torch.ones(1, 1, 2, 2, 2)) for _ in range(20)])
    assert (drawn == 0).any() and (drawn == 1).any()  # old images come back half of the time
    restored = ImagePool(0)
    restored.load_state_dict(pool.state_dict())
    assert restored.pool_size == 2 and all(torch.equal(a, b) for a, b in zip(restored.images, pool.images))
    assert torch.equal(ImagePool(0).query(torch.ones(1, 1, 2, 2, 2)), torch.ones(1, 1, 2, 2, 2))


def test_sliding_window_inference_covers_whole_volume():
    inferer = make_sliding_window_inferer((16, 16, 8), overlap=0.5, device="cpu")
    assert inferer.mode == "gaussian"
    network = ResidualUNet(1, 1, filters=(4, 8, 8))  # identity at initialisation
    network.train()
    volume = torch.randn(1, 30, 21, 13)
    pred = predict_volume(network, volume, inferer)
    assert pred.shape == volume.shape and pred.dtype == torch.float32
    torch.testing.assert_close(pred, volume, atol=1e-5, rtol=1e-5)
    assert network.training  # mode restored
    with torch.no_grad():
        network.unet.output_block.conv.conv.bias.fill_(0.25)
    torch.testing.assert_close(predict_volume(network, volume, inferer), volume + 0.25, atol=1e-5, rtol=1e-5)
    bf16 = predict_volume(network, volume, inferer, precision="bf16")
    assert (bf16 - (volume + 0.25)).abs().max() < 0.05
    with pytest.raises(ValueError):
        make_sliding_window_inferer((16, 16, 8), overlap=1.0)
