"""Sharded checkpoints: every rank writes only its bank rows (DCP), resume re-shards onto any number of ranks.

Real gloo process groups (forked processes, so each start costs a second, not a torch import),
real files, real ``kill -9``. N is small and uneven (9 rows over 4 ranks leaves rank 3 none).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import REPO, free_port
from torch.distributed.checkpoint import FileSystemReader

from and_plugin.checkpoint import CheckpointError, load_checkpoint
from and_plugin.run_checkpoint import RunCheckpoint
from and_plugin.rundir import RunDirError
from and_plugin import RowPartition, ShardedRunCheckpoint


def global_tensors(size: int, width: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """The whole (N, ...) tensors a run shards, one of each dtype a run keeps; the same in every process."""
    generator = torch.Generator().manual_seed(seed)
    bank = torch.nn.functional.normalize(torch.randn(size, width, generator=generator), dim=1)
    return {
        "memory_bank": bank,
        "bank_half": bank.half(),
        "bank_bf16": bank.bfloat16(),
        "written": torch.rand(size, generator=generator) < 0.5,
        "entropy": torch.rand(size, generator=generator, dtype=torch.float64),
        "neighbours": torch.randint(0, size, (size, 3), generator=generator),
    }


def local_rows(tensors: dict[str, torch.Tensor], part: RowPartition) -> dict[str, torch.Tensor]:
    return {name: value[part.start:part.stop].clone() for name, value in tensors.items()}


def state_of(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((2, 2), float(step))}}


def save_rows(output_dir: Path, size: int, step: int, seed: int, width: int = 4) -> None:
    part = RowPartition.current(size)
    ShardedRunCheckpoint(output_dir).save(state_of(step), local_rows(global_tensors(size, width, seed), part), part)


def load_and_check(output_dir: Path, size: int, step: int, seed: int, width: int = 4) -> None:
    """Loads this process's rows and checks them bit for bit (values and dtype) against the originals."""
    part = RowPartition.current(size)
    loaded = ShardedRunCheckpoint(output_dir).load(part)
    assert loaded is not None
    state, shards = loaded
    assert state["step"] == step and torch.equal(state["model"]["w"], state_of(step)["model"]["w"])
    expected = local_rows(global_tensors(size, width, seed), part)
    assert shards.keys() == expected.keys()
    for name, value in expected.items():
        got = shards[name]
        assert got.dtype == value.dtype and got.shape == value.shape, (name, got.dtype, got.shape)
        assert torch.equal(got, value), f"rank {part.rank}: {name} differs"


def _rank_main(rank: int, world: int, port: int, function, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        function(*args)
    finally:
        dist.destroy_process_group()


def on_ranks(world: int, function, *args) -> None:
    """Runs ``function(*args)`` on every rank of a fresh gloo group of ``world`` processes; world 0
    runs it here, without a process group."""
    if world == 0:
        function(*args)
        return
    mp.start_processes(_rank_main, args=(world, free_port(), function, args), nprocs=world, start_method="fork")


def chunks(directory: Path, name: str) -> list[tuple[list[int], list[int], str]]:
    """(offsets, sizes, file) of every chunk DCP wrote of ``name``, by row offset."""
    metadata = FileSystemReader(directory).read_metadata()
    files = {index.offset: info.relative_path
             for index, info in metadata.storage_data.items() if index.fqn == name}
    return sorted((list(c.offsets), list(c.sizes), files[c.offsets])
                  for c in metadata.state_dict_metadata[name].chunks)


# ---------------------------------------------------------------- layout on disk


@pytest.mark.distributed
def test_every_rank_writes_its_own_rows_to_its_own_file(tmp_path):
    size, world = 9, 4  # ceil(9/4) = 3: ranks 0-2 hold 3 rows, rank 3 none
    on_ranks(world, save_rows, tmp_path, size, 1, 0)
    layout = load_checkpoint(tmp_path / "checkpoint.pt")["sharded"]
    assert layout["directory"] == "shards-1" and (layout["size"], layout["world"]) == (9, 4)
    assert layout["shards"]["bank_bf16"] == {"dtype": "bfloat16", "shape": [9, 4]}
    assert layout["shards"]["written"] == {"dtype": "bool", "shape": [9]}
    directory = tmp_path / "shards-1"
    assert sorted(os.listdir(directory)) == [".metadata"] + [f"__{r}_0.distcp" for r in range(world)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "shards-1"]
    # rank r wrote exactly its rows, in its own file: nobody held (or wrote) the whole bank
    partition = [RowPartition(size, world, r) for r in range(world)]
    expected = [([p.start, 0], [p.count, 4], f"__{p.rank}_0.distcp") for p in partition]  # rank 3: 0 rows at 9
    assert chunks(directory, "memory_bank") == expected
    sizes = [(directory / f"__{r}_0.distcp").stat().st_size for r in range(world)]
    assert sizes[0] == sizes[1] == sizes[2] > sizes[3]  # 3, 3, 3 and 0 rows


@pytest.mark.distributed
def test_round_trip_on_the_same_ranks_is_bit_exact_including_a_rank_without_rows(tmp_path):
    on_ranks(4, save_rows, tmp_path, 9, 1, 0)
    on_ranks(4, load_and_check, tmp_path, 9, 1, 0)


@pytest.mark.distributed
@pytest.mark.parametrize("saved_on, loaded_on", [(4, 2), (2, 4), (1, 3), (3, 1), (0, 3), (3, 0)],
                         ids=["4to2", "2to4", "1to3", "3to1", "no-group-to-3", "3-to-no-group"])
def test_resume_reshards_onto_another_number_of_ranks(tmp_path, saved_on, loaded_on):
    """37 rows: 10/10/10/7 on 4 ranks, 19/18 on 2, 13/13/11 on 3; 0 is one process without a group."""
    on_ranks(saved_on, save_rows, tmp_path, 37, 1, 3)
    on_ranks(loaded_on, load_and_check, tmp_path, 37, 1, 3)


def _bytes_read() -> int:
    with open("/proc/self/io") as file:
        return int(next(line for line in file if line.startswith("rchar:")).split()[1])


def _load_counting_bytes(output_dir: Path, size: int, width: int, limit: int) -> None:
    part = RowPartition.current(size)
    checkpoint = ShardedRunCheckpoint(output_dir)
    before = _bytes_read()
    _state, shards = checkpoint.load(part)
    read = _bytes_read() - before
    assert shards["memory_bank"].shape == (part.count, width)
    assert read < limit, f"rank {part.rank} read {read} bytes for its {part.count} of {size} rows"


@pytest.mark.distributed
@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts the bytes read through /proc/self/io")
def test_a_rank_reads_about_its_own_rows_not_the_whole_bank(tmp_path):
    """4 ranks save 2000 x 256 float32 rows (2 MB); each of 2 ranks then reads about half of it."""
    size, width = 2000, 256
    whole = size * width * 4
    on_ranks(4, lambda: ShardedRunCheckpoint(tmp_path).save(
        {"step": 1}, {"memory_bank": torch.ones(RowPartition.current(size).count, width)},
        RowPartition.current(size)))
    on_ranks(2, _load_counting_bytes, tmp_path, size, width, int(0.6 * whole))


# ---------------------------------------------------------------- checkpoints over time


def test_a_new_checkpoint_replaces_the_previous_shard_directory(tmp_path):
    checkpoint = ShardedRunCheckpoint(tmp_path)
    save_rows(tmp_path, 5, 1, 0)
    assert checkpoint.save(state_of(2), local_rows(global_tensors(5, seed=1), RowPartition(5)),
                           RowPartition(5)) == tmp_path / "shards-2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "shards-2"]
    load_and_check(tmp_path, 5, 2, 1)


def test_no_checkpoint_loads_as_none(tmp_path):
    assert ShardedRunCheckpoint(tmp_path / "new").load(RowPartition(5)) is None


def test_resume_against_another_n_is_refused_naming_both(tmp_path):
    save_rows(tmp_path, 37, 1, 0)
    with pytest.raises(RunDirError) as error:
        ShardedRunCheckpoint(tmp_path).load(RowPartition(36))
    message = str(error.value)
    assert "\n" not in message
    assert "holds a memory bank of N=37 rows, this run has N=36; resume against another N or data is refused" in message


def test_a_replicated_runs_checkpoint_is_refused(tmp_path):
    RunCheckpoint(tmp_path).save({"bank": torch.zeros(5, 2)})
    with pytest.raises(CheckpointError, match=r"holds no sharded memory bank .*method.bank_layout=replicated$"):
        ShardedRunCheckpoint(tmp_path).load(RowPartition(5))


def test_a_missing_shard_file_is_reported_not_loaded(tmp_path):
    save_rows(tmp_path, 5, 1, 0)
    (tmp_path / "shards-1" / "__0_0.distcp").unlink()
    with pytest.raises(CheckpointError, match=r"shards-1' .* is incomplete or corrupted \(.*\); restore a copy"):
        ShardedRunCheckpoint(tmp_path).load(RowPartition(5))


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    checkpoint = ShardedRunCheckpoint(tmp_path)
    part = RowPartition(5)
    with pytest.raises(ValueError, match=r"^shards\['memory_bank'\] must hold this rank's 5 rows \[0, 5\) of N=5, "
                                         r"got shape \(4, 2\) \(rank 0\)$"):
        checkpoint.save({}, {"memory_bank": torch.zeros(4, 2)}, part)
    with pytest.raises(ValueError, match=r"^partition must be this process's rows \(world=1, rank=0"):
        checkpoint.save({}, {"memory_bank": torch.zeros(2, 2)}, RowPartition(5, world=2, rank=1))
    with pytest.raises(ValueError, match=r"^state must not hold the key 'sharded'"):
        checkpoint.save({"sharded": 1}, {"memory_bank": torch.zeros(5, 2)}, part)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def _save_with_one_rank_wrong(output_dir: Path) -> None:
    part = RowPartition.current(10)
    rows = part.count + (1 if part.rank == 1 else 0)
    with pytest.raises(ValueError, match=r"shards\['memory_bank'\] must hold this rank's 5 rows \[5, 10\) .*\(rank 1\)"):
        ShardedRunCheckpoint(output_dir).save({}, {"memory_bank": torch.zeros(rows, 2)}, part)
    dtype = torch.float16 if part.rank == 1 else torch.float32
    with pytest.raises(ValueError, match=r"same names, dtypes and trailing shapes on every rank, got "
                                         r"\{memory_bank: float32 \(n, 2\)\} on rank 0 and "
                                         r"\{memory_bank: float16 \(n, 2\)\} on rank 1"):
        ShardedRunCheckpoint(output_dir).save({}, {"memory_bank": torch.zeros(part.count, 2, dtype=dtype)}, part)
    other = RowPartition(11 if part.rank == 1 else 10, 2, part.rank)
    with pytest.raises(ValueError, match=r"^partition.size must be the same N on every rank, got 10 on rank 0 "
                                         r"and 11 on rank 1$"):
        ShardedRunCheckpoint(output_dir).save({}, {"memory_bank": torch.zeros(other.count, 2)}, other)


@pytest.mark.distributed
def test_a_mistake_on_one_rank_fails_every_rank_instead_of_hanging(tmp_path):
    on_ranks(2, _save_with_one_rank_wrong, tmp_path)
    assert not any(tmp_path.iterdir())


def _save_an_unpicklable_state(output_dir: Path) -> None:
    save_rows(output_dir, 10, 1, 0)
    part = RowPartition.current(10)
    rows = local_rows(global_tensors(10, seed=5), part)
    if part.rank == 0:  # the writer of checkpoint.pt meets the error itself
        with pytest.raises(Exception, match="lambda"):
            ShardedRunCheckpoint(output_dir).save({"step": 2, "hook": lambda: None}, rows, part)
    else:
        with pytest.raises(CheckpointError, match=r"cannot be written: .*lambda.*; the previous checkpoint is kept$"):
            ShardedRunCheckpoint(output_dir).save({"step": 2, "hook": lambda: None}, rows, part)
    load_and_check(output_dir, 10, 1, 0)


@pytest.mark.distributed
def test_a_checkpoint_file_rank_0_cannot_write_fails_every_rank_and_keeps_the_previous(tmp_path):
    on_ranks(2, _save_an_unpicklable_state, tmp_path)


# ---------------------------------------------------------------- kill -9 while saving

_SAVER = """
import sys, torch
from pathlib import Path
from and_plugin import RowPartition, ShardedRunCheckpoint
output_dir, phase = Path(sys.argv[1]), sys.argv[2]
part = RowPartition(37)
checkpoint = ShardedRunCheckpoint(output_dir)
small = {"memory_bank": torch.full((37, 4), 1.0), "written": torch.ones(37, dtype=torch.bool)}
checkpoint.save({"step": 1}, small, part)
print("saved 1", flush=True)
if phase == "shards":   # a large shard: DCP writes for a while
    checkpoint.save({"step": 2}, {"memory_bank": torch.full((37, 1_000_000), 2.0)}, part)
else:                   # a large state: checkpoint.pt is written for a while after the rename
    checkpoint.save({"step": 2, "model": torch.zeros(60_000_000)}, small, part)
print("saved 2", flush=True)
"""


def _kill_when(tmp_path: Path, phase: str, ready) -> list[str]:
    """Starts a saver, SIGKILLs it as soon as ``ready()``; returns what the directory held then."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    saver = subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path), phase], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert saver.stdout.readline().strip() == "saved 1"
        deadline = time.monotonic() + 60
        while not ready():
            assert saver.poll() is None, "the saver finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.001)
        saver.send_signal(signal.SIGKILL)
        seen = sorted(os.listdir(tmp_path))
    finally:
        saver.kill()
        saver.wait()
    assert saver.returncode == -signal.SIGKILL
    return seen


def _assert_step_one_loads(tmp_path: Path) -> None:
    state, shards = ShardedRunCheckpoint(tmp_path).load(RowPartition(37))
    assert state["step"] == 1
    assert torch.equal(shards["memory_bank"], torch.full((37, 4), 1.0))
    assert torch.equal(shards["written"], torch.ones(37, dtype=torch.bool))


def test_kill_9_while_shards_are_written_leaves_the_previous_checkpoint(tmp_path):
    shard_file = tmp_path / "shards-2.tmp" / "__0_0.distcp"
    seen = _kill_when(tmp_path, "shards", lambda: shard_file.exists() and shard_file.stat().st_size > 0)
    assert "shards-2.tmp" in seen and "shards-2" not in seen
    _assert_step_one_loads(tmp_path)
    # the next save (or remove_stale at a start) clears the killed save's directory
    save_rows(tmp_path, 37, 3, 0)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "shards-3"]


def test_kill_9_between_the_rename_and_the_new_checkpoint_file_leaves_the_previous_one(tmp_path):
    def writing_checkpoint_file() -> bool:  # save_checkpoint's temporary file beside checkpoint.pt
        return any(name.startswith(".checkpoint.pt.") for name in os.listdir(tmp_path))

    seen = _kill_when(tmp_path, "state", writing_checkpoint_file)
    assert {"shards-1", "shards-2"} <= set(seen)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["sharded"]["directory"] == "shards-1"
    _assert_step_one_loads(tmp_path)
    assert ShardedRunCheckpoint(tmp_path).remove_stale() == [tmp_path / "shards-2"]
    _assert_step_one_loads(tmp_path)


def test_module_doctest():
    import doctest

    from and_plugin.sharded import checkpoint

    result = doctest.testmod(checkpoint)
    assert result.attempted and not result.failed
