"""DDP on the CPU (gloo): two ranks stay in sync, and only rank 0 writes checkpoints and logs."""

from __future__ import annotations

import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, method: str, root: str) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from support.training import make_trainer, tiny_store

    from sonoseg.training.data import training_sets

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        manifest, splits, store = tiny_store(Path(root) / f"data{rank}")  # identical content, no shared writes
        trainer = make_trainer(method, Path(root) / f"models_rank{rank}", iterations=3, checkpoint_every=3, val_every=3)
        assert trainer.distributed and trainer.rank == rank
        trainer.fit(training_sets(manifest, splits, store, trainer.config.input_size))
        weights = {k: v.clone() for k, v in trainer.method.inference_network().state_dict().items()}
        torch.save(weights, Path(root) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_cpu_ranks_end_with_identical_weights_and_one_writer(tmp_path):
    method = "hdc"  # two decoders, EMA teachers and two forward passes per step
    mp.start_processes(_worker, args=(2, _free_port(), method, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    trained = [k for k, v in rank0.items() if v.is_floating_point() and "running" not in k]
    assert trained and all(torch.equal(rank0[k], rank1[k]) for k in trained)
    checkpoint = torch.load(tmp_path / "models_rank0" / method / "last.pt", weights_only=False)
    assert checkpoint["iteration"] == 3
    assert not (tmp_path / "models_rank1").exists()  # rank 1 wrote nothing
