"""The Trainer with a sharded bank equals the replicated one, and resumes across world sizes.

Real gloo process groups (W ∈ {1, 2, 4}, N = 50: uneven shards 13/13/13/11 at W = 4). A
replicated and a sharded run of the same config must give the same losses, weights and bank up
to float rounding (the sharded loss adds the shards' partial sums in another order), and the same
anchors and neighbours in every round. A sharded checkpoint written by W ranks resumes on another
W, and a run killed with SIGKILL resumes bit for bit on the same W.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port, tiny_backbone, tiny_dataset

from and_plugin import Trainer, load_config
from and_plugin.distributed import all_gather_cat

N = 50
REPO = Path(__file__).resolve().parents[1]


class TwoViews(torch.utils.data.Dataset):
    """(image, its horizontal flip) as two views: lightly's multi-view item shape."""

    def __init__(self, inner):
        self.inner, self.targets = inner, inner.targets

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        image, target, index = self.inner[i]
        return [image, image.flip(-1)], target, index


def _config(output_dir, layout, *extra):
    return load_config(None, _overrides(output_dir, layout, *extra))


def _overrides(output_dir, layout, *extra):
    return [
        f"run.output_dir={output_dir}", "run.device=cpu", "run.progress=false", "run.threads=1",
        "run.deterministic=true", "data.batch_size=20", "model.embedding_dim=16", "eval.bank_knn=false",
        "optim.round0_epochs=2", "optim.epochs_per_round=1", "method.rounds=2",  # plan (0,2) (1,1) (2,1)
        f"method.bank_layout={layout}", *extra,
    ]


class RoundStates:
    """Keeps every round's anchors and neighbours (rank 0)."""

    def __init__(self):
        self.rounds = {}

    def on_epoch_end(self, trainer, record):
        state = trainer.curriculum.state
        if record["round"] > 0 and state is not None:
            self.rounds[record["round"]] = (state.anchor_mask.clone(), state.neighbours.clone())


def _worker(rank, world, port, output_dir, result, layout, extra, views, stop_after, n):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        data = tiny_dataset(n=n)
        data = TwoViews(data) if views == 2 else data
        states = RoundStates()
        trainer = Trainer(_config(output_dir, layout, *extra), tiny_backbone(), data, callbacks=[states])
        trainer.fit(stop_after_epochs=stop_after)
        bank = all_gather_cat(trainer.bank.bank) if trainer.method.sharded else trainer.bank.bank
        if rank == 0:
            torch.save({"bank": bank.clone(), "model": trainer.model.state_dict(), "rounds": states.rounds,
                        "losses": [h["loss"] for h in trainer.history], "position": trainer.position}, result)
    finally:
        dist.destroy_process_group()


def _train(tmp_path, name, world, layout, *extra, views=1, stop_after=None, output=None, n=N):
    output = output or tmp_path / name
    result = tmp_path / f"{name}.pt"
    mp.spawn(_worker, args=(world, free_port(), str(output), str(result), layout, list(extra), views, stop_after, n),
             nprocs=world, join=True)
    return torch.load(result, weights_only=False)


def _close(a, b, exact=False, resumed=False):
    """``resumed``: ``a`` continued a checkpoint, so its callbacks saw only the rounds after it."""
    check = torch.equal if exact else (lambda x, y: torch.allclose(x.float(), y.float(), atol=2e-5, rtol=1e-4))
    assert check(a["bank"], b["bank"])
    for key, value in a["model"].items():
        assert check(value, b["model"][key]), key
    if exact:
        assert a["losses"] == b["losses"]
    else:
        assert a["losses"] == pytest.approx(b["losses"], rel=1e-5)
    assert a["rounds"].keys() == b["rounds"].keys() or resumed and a["rounds"].keys() < b["rounds"].keys()
    for round_index, (anchors, neighbours) in a["rounds"].items():
        assert torch.equal(anchors, b["rounds"][round_index][0]), f"anchors of round {round_index}"
        assert torch.equal(neighbours, b["rounds"][round_index][1]), f"neighbours of round {round_index}"


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("world, neighbours, views", [(1, 1, 1), (2, 3, 2), (4, 1, 1)])
def test_sharded_training_equals_replicated_training(tmp_path, world, neighbours, views):
    extra = (f"method.neighbours={neighbours}",)
    replicated = _train(tmp_path, "replicated", world, "replicated", *extra, views=views)
    sharded = _train(tmp_path, "sharded", world, "sharded", *extra, views=views)
    assert sorted(sharded["rounds"]) == [1, 2]
    _close(sharded, replicated)


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("first, second", [(4, 2), (2, 4)])
def test_a_sharded_checkpoint_resumes_on_another_number_of_ranks(tmp_path, first, second):
    # N = 60: every global batch of 20 splits evenly over 2 and 4 ranks, so both world sizes train
    # the same model (an uneven last batch would weight the ranks' means differently).
    run = tmp_path / "run"
    stopped = _train(tmp_path, "first", first, "sharded", stop_after=3, output=run, n=60)  # into round 1
    assert stopped["position"] == (2, 0)
    resumed = _train(tmp_path, "second", second, "sharded", "run.resume=true", output=run, n=60)
    straight = _train(tmp_path, "straight", second, "sharded", n=60)
    assert sorted(resumed["rounds"]) == [2]
    _close(resumed, straight, resumed=True)  # W ranks add the shards' sums in another order: equal to rounding


CHILD = textwrap.dedent("""\
    import os, sys, time, torch, torch.distributed as dist, torch.multiprocessing as mp
    sys.path.insert(0, {tests!r})
    from and_plugin import Trainer, load_config
    from conftest import tiny_backbone, tiny_dataset

    class Slow(torch.utils.data.Dataset):
        def __init__(self):
            self.inner = tiny_dataset(n={n}); self.targets = self.inner.targets
        def __len__(self):
            return len(self.inner)
        def __getitem__(self, i):
            time.sleep(0.01)
            return self.inner[i]

    def work(rank):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="{port}")
        dist.init_process_group("gloo", rank=rank, world_size=2)
        Trainer(load_config(None, {overrides!r}), tiny_backbone(), Slow()).fit()

    if __name__ == "__main__":
        mp.spawn(work, nprocs=2)
""")


def _position(run: Path):
    path = run / "checkpoint.pt"
    if not path.exists():
        return (0, 0)
    try:
        return tuple(torch.load(path, weights_only=False)["position"])
    except Exception:  # being replaced right now
        return (0, 0)


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_sharded_run_killed_with_sigkill_resumes_bit_for_bit(tmp_path):
    killed = tmp_path / "killed"
    overrides = _overrides(killed, "sharded")
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(REPO / "tests"), n=N, port=free_port(), overrides=overrides))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while _position(killed) < (0, 1):
        assert child.poll() is None, child.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)  # into the next epoch
    os.killpg(child.pid, signal.SIGKILL)  # every rank at once, as a node failure
    child.wait()
    assert _position(killed) < (3, 0), "the run finished before it was killed"
    resumed = _train(tmp_path, "resumed", 2, "sharded", "run.resume=true", output=killed)
    straight = _train(tmp_path, "straight", 2, "sharded")
    _close(resumed, straight, exact=True, resumed=True)


@pytest.mark.distributed
def test_a_checkpoint_is_resumed_only_under_the_bank_layout_that_wrote_it(tmp_path):
    replicated = tmp_path / "replicated"
    Trainer(_config(replicated, "replicated"), tiny_backbone(), tiny_dataset(n=N)).fit(stop_after_epochs=1)
    with pytest.raises(mp.ProcessRaisedException, match=r"holds no sharded memory bank \(it was written with "
                                                         r"method.bank_layout=replicated\); resume it with"):
        _train(tmp_path, "sharded", 1, "sharded", "run.resume=true", output=replicated)
    sharded = tmp_path / "sharded"
    _train(tmp_path, "first", 1, "sharded", stop_after=1, output=sharded)
    with pytest.raises(ValueError, match="was trained on something else than this run; refusing to resume. "
                                         "Differences \\(checkpoint -> now\\): method.bank_layout: 'sharded' -> 'replicated'"):
        Trainer(_config(sharded, "replicated", "run.resume=true"), tiny_backbone(), tiny_dataset(n=N)).fit()


def test_the_knn_monitor_can_use_a_fixed_sample_of_the_training_images(tmp_path):
    """At tens of millions of images the kNN's training side is a seeded sample, not all N."""
    data = tiny_dataset(n=N)
    trainer = Trainer(_config(tmp_path / "a", "replicated", "eval.knn_train_subset=20"), tiny_backbone(), data,
                      data, data)
    sample = trainer.monitor.eval_train_set
    assert len(sample) == 20 and len(set(sample.indices)) == 20
    again = Trainer(_config(tmp_path / "b", "replicated", "eval.knn_train_subset=20"), tiny_backbone(), data, data, data)
    assert again.monitor.eval_train_set.indices == sample.indices  # chosen from run.seed
    assert "knn" in trainer._end_of_round_eval(0)
    whole = Trainer(_config(tmp_path / "c", "replicated"), tiny_backbone(), data, data, data)
    assert whole.monitor.eval_train_set is data
