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


def test_one_long_instance_run_serves_every_round_length(harness, tmp_path):
    """At a constant lr, a long instance run evaluated every epoch has, at each budget of a short
    setting, exactly the numbers of that setting's own (separately trained) instance arm."""
    common = ["--dataset", "digits", "--subset", "200", "--split", "val", "--val-size", "100", "--rounds", "1",
              "--seeds", "0", "1", "--scratch", str(tmp_path / "scratch"), "--results", str(tmp_path / "res")]
    overrides = ["--", "optim.lr_schedule=constant", "data.batch_size=50"]
    harness.main(["run", "--study", "len", "--setting", "own", *common, "--epochs-per-round", "1", *overrides])
    harness.main(["run", "--study", "len", "--setting", "long", *common, "--epochs-per-round", "2",
                  "--arms", "instance", "--eval-every", "1", *overrides])
    harness.main(["run", "--study", "len", "--setting", "shared", *common, "--epochs-per-round", "1",
                  "--arms", "and", "--instance-from", "len/long", *overrides])
    res = tmp_path / "res" / "len"
    own, long_, shared = (json.loads((res / f"{n}.json").read_text()) for n in ("own", "long", "shared"))
    assert [p["epochs"] for p in long_["per_seed"]["instance"]["0"]] == [1, 2, 3, 4]
    assert shared["per_seed"]["instance"] == own["per_seed"]["instance"]  # bit-equal kNN at epochs 1 and 2
    assert shared["per_seed"]["and"] == own["per_seed"]["and"]
    index = {r["setting"]: r for r in json.loads((tmp_path / "res" / "index.json").read_text())}
    assert index["long"]["and_knn"] is None and index["long"]["arms"] == ["instance"]
    assert index["shared"]["diff_knn"] == index["own"]["diff_knn"]


def test_a_long_instance_run_is_refused_where_it_cannot_serve(harness, tmp_path):
    common = ["--dataset", "digits", "--subset", "200", "--split", "val", "--val-size", "100", "--rounds", "1",
              "--seeds", "0", "--scratch", str(tmp_path / "scratch"), "--results", str(tmp_path / "res")]
    harness.main(["run", "--study", "len", "--setting", "long", *common, "--epochs-per-round", "2",
                  "--arms", "instance", "--eval-every", "2", "--", "optim.lr_schedule=constant",
                  "data.batch_size=50"])
    with pytest.raises(SystemExit, match=r"kNN at epochs \[2, 4\], not at every budget \[3, 6\]"):
        harness.main(["run", "--study", "len", "--setting", "x", *common, "--epochs-per-round", "3",
                      "--arms", "and", "--instance-from", "len/long", "--", "optim.lr_schedule=constant",
                      "data.batch_size=50"])
    harness.main(["run", "--study", "len", "--setting", "long-cosine", *common, "--epochs-per-round", "2",
                  "--arms", "instance", "--eval-every", "1", "--", "optim.lr_schedule=cosine", "data.batch_size=50"])
    with pytest.raises(SystemExit, match="only a constant lr"):
        harness.main(["run", "--study", "len", "--setting", "y", *common, "--epochs-per-round", "1",
                      "--arms", "and", "--instance-from", "len/long-cosine", "--", "optim.lr_schedule=cosine",
                      "data.batch_size=50"])
    with pytest.raises(SystemExit, match="--eval-every: only with --arms instance"):
        harness.main(["run", "--study", "len", "--setting", "z", *common, "--eval-every", "1"])


def test_paired_test_matches_the_t_distribution_by_hand(harness):
    from scipy import stats

    # differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t = 2 sqrt(3) = 3.4641 on 2 degrees of freedom;
    # t(0.975, 2) = 4.3027, so the 95 % interval is 2 -/+ 2.4842 and contains 0.
    result = harness.paired_test([1.0, 2.0, 3.0])
    assert result["mean"] == pytest.approx(2.0) and result["sd"] == pytest.approx(1.0)
    assert result["t"] == pytest.approx(3.4641016, rel=1e-6)
    assert result["ci"] == pytest.approx([2 - 2.4841377, 2 + 2.4841377], rel=1e-6)
    assert result["p"] == pytest.approx(stats.ttest_1samp([1.0, 2.0, 3.0], 0.0).pvalue, rel=1e-9)
    assert result["verdict"] == "level"
    # +0.7 ± 0.3 over 3 seeds passes "two standard errors" (2 * 0.173 = 0.35) but not t(0.975, 2):
    assert harness.paired_test([0.4, 0.7, 1.0])["verdict"] == "level"
    ahead = harness.paired_test([0.9, 1.1, 1.0, 0.95, 1.05])
    assert ahead["verdict"] == "AND ahead" and ahead["ci"][0] > 0 and ahead["p"] < 0.05
    assert harness.paired_test([-2.0, -2.2, -1.9])["verdict"] == "instance ahead"
    assert harness.paired_test([1.5])["verdict"] == "one seed" and harness.paired_test([]) is None


def test_a_setting_run_in_pieces_equals_one_run(harness, tmp_path):
    common = ["--dataset", "digits", "--subset", "200", "--split", "val", "--val-size", "100", "--rounds", "1",
              "--epochs-per-round", "1", "--scratch", str(tmp_path / "scratch"), "--results", str(tmp_path / "res")]
    overrides = ["--", "optim.lr_schedule=constant", "data.batch_size=50"]
    harness.main(["run", "--study", "p", "--setting", "whole", *common, "--seeds", "0", "1", *overrides])
    harness.main(["run", "--study", "p", "--setting", "pieces", *common, "--seeds", "1", "--add-seeds", *overrides])
    harness.main(["run", "--study", "p", "--setting", "pieces", *common, "--seeds", "0", "--add-seeds", *overrides])
    whole, pieces = (json.loads((tmp_path / "res" / "p" / f"{n}.json").read_text()) for n in ("whole", "pieces"))
    assert pieces["seeds"] == [0, 1] and pieces["per_seed"] == whole["per_seed"]
    assert pieces["summary"] == whole["summary"] and len(pieces["pieces"]) == 2
    with pytest.raises(SystemExit, match=r"already holds seeds \[1\]"):
        harness.main(["run", "--study", "p", "--setting", "pieces", *common, "--seeds", "1", "--add-seeds", *overrides])
    with pytest.raises(SystemExit, match="holds another setting"):
        harness.main(["run", "--study", "p", "--setting", "pieces", *common, "--seeds", "2", "--add-seeds", *overrides,
                      "method.neighbours=2"])
