"""`torchrun` launches work: the trainer joins the process group from the environment (gloo, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_torchrun_two_cpu_processes_train_and_only_rank_0_saves(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(TESTS)!r})
        from support.training import make_trainer, tiny_store
        from sonoseg.training.data import training_sets
        rank = int(os.environ["RANK"])
        manifest, splits, store = tiny_store(Path({str(tmp_path)!r}) / f"data{{rank}}")
        trainer = make_trainer("supervised", Path({str(tmp_path)!r}) / f"models{{rank}}", iterations=2, checkpoint_every=2, val_every=2)
        assert trainer.distributed and trainer.rank == rank
        trainer.fit(training_sets(manifest, splits, store, 32))
    """))
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(script)],
                          env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "models0" / "supervised" / "last.pt").is_file()
    assert not (tmp_path / "models1").exists()
