"""DDP on the CPU: two gloo processes train the same model and end with identical weights."""

from __future__ import annotations

import csv
import os
import socket

import torch
import torch.multiprocessing as mp

from .conftest import TINY_CYCLE, TINY_PAIRED, smooth_volume


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from medgan.engines.train import train_cyclegan, train_paired

    # one process group for both runs (as a script calling two entry points under torchrun would do)
    dist.init_process_group("gloo")

    generator = torch.Generator().manual_seed(7)
    cases = []
    for _ in range(2):
        target = smooth_volume(generator, (24, 24, 16))
        cases.append({"source": target + 0.3, "target": target})
    paired = train_paired(cases, [], os.path.join(folder, "paired"), iterations=3, epoch_length=3,
                          checkpoint_every=3, **TINY_PAIRED)
    cycle_options = {**TINY_CYCLE, "patch_size_vox": (8, 8, 8)}
    cycle = train_cyclegan([{"source": c["source"]} for c in cases], [{"target": c["target"]} for c in cases],
                           os.path.join(folder, "cycle"), iterations=2, epoch_length=2, checkpoint_every=2,
                           pool_size=2, **cycle_options)
    torch.save({"paired": paired["generator"].state_dict(), "cycle": cycle["generator"].state_dict()},
               os.path.join(folder, f"rank{rank}.pt"))
    assert dist.is_initialized()  # the entry points left the caller's group alone
    dist.destroy_process_group()


def test_two_gloo_ranks_hold_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for model in ("paired", "cycle"):
        for name, value in rank0[model].items():
            assert torch.equal(value, rank1[model][name]), (model, name)
    # the weights moved away from the (zero-initialised) residual output: training happened
    assert rank0["paired"]["unet.output_block.conv.conv.weight"].abs().sum() > 0
    with open(tmp_path / "paired" / "losses.csv", newline="") as handle:
        assert [row["iteration"] for row in csv.DictReader(handle)] == ["1", "2", "3"]  # rank 0 only wrote
    assert sorted(p.name for p in (tmp_path / "paired" / "checkpoints").iterdir()) == ["checkpoint_00000003.pt"]
