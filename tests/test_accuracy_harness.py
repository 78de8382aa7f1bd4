"""The accuracy harness (benchmarks/accuracy.py): held-out split, equal budgets, seeds and spread."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("train_size, val_size", [(None, 30), (60, 30), (190, 30)])
def test_validation_split_is_disjoint_balanced_and_inside_the_training_set(harness, train_size, val_size):
    targets = np.repeat(np.arange(5), 40)  # 200 training images, 5 classes
    train, val = harness.validation_split(targets, train_size, val_size)
    assert len(np.intersect1d(train, val)) == 0
    assert len(val) == val_size and np.bincount(targets[val], minlength=5).tolist() == [val_size // 5] * 5
    assert train.max() < len(targets) and val.max() < len(targets)
    if train_size:
        assert len(train) == min(train_size, len(targets) - val_size)  # held-out images come first
    again = harness.validation_split(targets, train_size, val_size)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)  # seeded, not random per call


def test_equal_budget_configs(harness):
    args = harness.parse_args(["run", "--study", "s", "--setting", "x", "--epochs-per-round", "3", "--rounds", "2",
                               "--", "optim.lr_schedule=constant"])
    configs = harness.configs_for(args, seed=4, output=Path("/tmp/unused"))
    and_cfg, inst = configs["and"], configs["instance"]
    assert inst.method.instance_only and inst.optim.round0_epochs == (2 + 1) * 3
    assert and_cfg.optim.lr_schedule == inst.optim.lr_schedule == "constant"
    assert and_cfg.run.seed == inst.run.seed == 4


def test_a_tiny_run_writes_seeds_spread_and_index(harness, tmp_path):
    harness.main(["run", "--study", "tiny", "--setting", "const", "--dataset", "digits", "--subset", "200",
                  "--split", "val", "--val-size", "100", "--epochs-per-round", "1", "--rounds", "1",
                  "--seeds", "0", "1", "--scratch", str(tmp_path / "scratch"), "--results", str(tmp_path / "res"),
                  "--", "optim.lr_schedule=constant", "data.batch_size=50"])
    result = json.loads((tmp_path / "res" / "tiny" / "const.json").read_text())
    assert result["seeds"] == [0, 1] and result["sizes"] == {"train": 200, "eval": 100}
    final_and = result["summary"]["and"][-1]["knn"]
    assert final_and["n"] == 2 and final_and["sd"] >= 0 and 0 < final_and["mean"] <= 100
    assert len(result["summary"]["and"]) == len(result["summary"]["instance"]) == 2  # kNN every E epochs
    assert result["summary"]["final_diff_knn"]["n"] == 2
    index = json.loads((tmp_path / "res" / "index.json").read_text())
    assert [row["setting"] for row in index] == ["const"]
    assert (tmp_path / "res" / "tiny" / "const.png").exists()


def test_restart_arm_and_and_only_keys(harness):
    args = harness.parse_args(["run", "--study", "s", "--setting", "k4", "--arms", "and", "instance", "instance_restarts",
                               "--", "optim.lr_schedule=cosine", "method.neighbours=4"])
    configs = harness.configs_for(args, seed=0, output=Path("/tmp/unused"))
    assert configs["and"].method.neighbours == 4
    assert configs["instance"].method.neighbours == 1  # an AND-only key never reaches the baselines
    restarts = configs["instance_restarts"]
    assert restarts.method.selection == "none" and not restarts.method.instance_only
    assert restarts.method.rounds == configs["and"].method.rounds and restarts.optim.round0_epochs is None
    assert restarts.optim.lr_schedule == configs["instance"].optim.lr_schedule == "cosine"


def test_instance_arm_is_reused_only_from_a_matching_setting(harness, tmp_path):
    common = ["--dataset", "digits", "--subset", "200", "--split", "val", "--val-size", "100",
              "--epochs-per-round", "1", "--rounds", "1", "--seeds", "0", "--scratch", str(tmp_path / "scratch"),
              "--results", str(tmp_path / "res")]
    harness.main(["run", "--study", "tiny", "--setting", "base", *common, "--", "data.batch_size=50"])
    harness.main(["run", "--study", "tiny", "--setting", "k2", *common, "--arms", "and", "instance_restarts",
                  "--instance-from", "tiny/base", "--", "data.batch_size=50", "method.neighbours=2"])
    base = json.loads((tmp_path / "res" / "tiny" / "base.json").read_text())
    k2 = json.loads((tmp_path / "res" / "tiny" / "k2.json").read_text())
    assert k2["instance_from"] == "tiny/base" and k2["arms"] == ["and", "instance", "instance_restarts"]
    assert k2["per_seed"]["instance"] == base["per_seed"]["instance"]
    assert k2["summary"]["final_diff_knn"]["n"] == k2["summary"]["final_diff_knn_restarts"]["n"] == 1
    row = [r for r in json.loads((tmp_path / "res" / "index.json").read_text()) if r["setting"] == "k2"][0]
    assert row["instance_from"] == "tiny/base" and row["instance_restarts_knn"]["n"] == 1
    with pytest.raises(SystemExit, match="epochs_per_round differs"):
        harness.main(["run", "--study", "tiny", "--setting", "bad", *common[:-6], "--epochs-per-round", "2",
                      *common[-4:], "--arms", "and", "--instance-from", "tiny/base", "--", "data.batch_size=50"])
    with pytest.raises(SystemExit, match="the instance arm's overrides differ"):
        harness.main(["run", "--study", "tiny", "--setting", "bad", *common, "--arms", "and",
                      "--instance-from", "tiny/base", "--", "data.batch_size=64"])
    with pytest.raises(SystemExit, match="leave 'instance' out of --arms"):
        harness.main(["run", "--study", "tiny", "--setting", "bad", *common, "--instance-from", "tiny/base"])


def test_an_unquoted_note_in_an_older_command_is_read_back(harness):
    import shlex

    old = {"note": "schedule chosen on digits-val",
           "command": "python benchmarks/accuracy.py run --study s --setting x --note schedule chosen on digits-val "
                      "--seeds 0 -- optim.lr_schedule=constant"}
    args = harness.parse_args(shlex.split(harness._quoted_command(old))[2:])
    assert args.note == "schedule chosen on digits-val" and args.overrides == ["optim.lr_schedule=constant"]


def test_budget_keys_cannot_be_overridden(harness, tmp_path):
    with pytest.raises(SystemExit, match=r"overrides: \['optim.round0_epochs'\] are set by the harness"):
        harness.main(["run", "--study", "s", "--setting", "x", "--results", str(tmp_path), "--", "optim.round0_epochs=9"])
