"""Algorithm 1 end to end on a tiny synthetic set: plan, lr restarts, logging, exact resume."""

import json

import pytest
import torch

from and_plugin import Trainer, build_run, load_config
from and_plugin.checkpoint import CheckpointError, load_checkpoint
from and_plugin.trainer import learning_rate, round_plan
from conftest import tiny_backbone, tiny_dataset


def config(tmp_path, *extra):
    return load_config(None, [
        f"run.output_dir={tmp_path}", "run.device=cpu", "run.progress=false", "run.threads=1",
        "optim.epochs_per_round=2", "method.rounds=2", "data.batch_size=32", "model.embedding_dim=16",
        *extra,
    ])


def test_round_plan_variants(tmp_path):
    assert round_plan(config(tmp_path)) == [(0, 2), (1, 2), (2, 2)]
    assert round_plan(config(tmp_path, "optim.round0_epochs=5")) == [(0, 5), (1, 2), (2, 2)]
    assert round_plan(config(tmp_path, "method.round0=random")) == [(1, 2), (2, 2)]
    assert round_plan(config(tmp_path, "method.instance_only=true", "optim.round0_epochs=6")) == [(0, 6)]


def test_lr_schedule_matches_the_paper_and_restarts():
    cfg = load_config(None, ["optim.epochs_per_round=200"])
    lrs = [learning_rate(cfg, e, 200) for e in (0, 79, 80, 119, 120, 159, 160, 199)]
    assert lrs == pytest.approx([0.03, 0.03, 0.003, 0.003, 3e-4, 3e-4, 3e-5, 3e-5])
    scaled = load_config(None, ["data.batch_size=512", "optim.lr_reference_batch=128"])
    assert learning_rate(scaled, 0, 200) == pytest.approx(0.12)


def test_fit_runs_all_rounds_and_logs(tmp_path):
    data = tiny_dataset()
    result = Trainer(config(tmp_path), tiny_backbone(), data, data, data).fit()
    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    assert [r.get("anchors") for r in result.rounds] == [None, 48, 96]
    assert all(0.0 <= r["knn"] <= 1.0 for r in result.rounds)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(l["round"], l["epoch"]) for l in lines] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert [l["lr"] for l in lines] == pytest.approx([0.03, 3e-5] * 3)  # restarts every round
    assert (tmp_path / "config.yaml").exists()


def test_selection_none_is_instance_learning_with_restarts(tmp_path):
    """No anchors in any round: the instance loss throughout, the schedule restarting every round
    (the instance baseline decays once over the same epochs)."""
    data = tiny_dataset()
    lrs, losses = {}, {}
    for name, extra in {"none": ["method.selection=none"],
                        "instance": ["method.instance_only=true", "optim.round0_epochs=6"]}.items():
        trainer = Trainer(config(tmp_path / name, "run.deterministic=true", *extra), tiny_backbone(), data, data, data)
        trainer.fit()
        lines = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        lrs[name], losses[name] = [l["lr"] for l in lines], [l["loss"] for l in lines]
        if name == "none":
            assert [r.get("anchors") for r in trainer.round_records] == [None, 0, 0]
    assert lrs["none"] == pytest.approx([0.03, 3e-5] * 3)
    assert lrs["instance"] == pytest.approx([0.03, 0.03, 0.003, 3e-4, 3e-5, 3e-5])
    assert losses["none"][0] == losses["instance"][0]  # same start


def test_resume_mid_round_is_exact(tmp_path):
    data = tiny_dataset()
    straight = Trainer(config(tmp_path / "a", "run.deterministic=true"), tiny_backbone(), data, data, data)
    straight.fit()
    first = Trainer(config(tmp_path / "b", "run.deterministic=true"), tiny_backbone(), data, data, data)
    first.fit(stop_after_epochs=3)  # stops after round 1 epoch 0: mid-round
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["position"] == (1, 1)
    resumed = Trainer(config(tmp_path / "b", "run.deterministic=true", "run.resume=true"),
                      tiny_backbone(seed=123), data, data, data)
    resumed.fit()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert torch.equal(straight.bank.bank, resumed.bank.bank)
    assert torch.equal(straight.curriculum.state.anchor_mask, resumed.curriculum.state.anchor_mask)
    assert [r["knn"] for r in straight.round_records] == [r["knn"] for r in resumed.round_records]

    def log(run):
        return [(r["round"], r["epoch"], r["loss"]) for r in map(json.loads, (tmp_path / run / "metrics.jsonl").open())]

    assert log("b") == log("a")  # every epoch once, with the same losses


def test_build_run_draws_initial_weights_from_the_seed(tmp_path):
    from and_plugin.build import build_run

    cfg = config(tmp_path, "data.dataset=digits", "model.backbone=small_cnn", "run.seed=3")
    first = build_run(cfg).model.state_dict()
    torch.rand(5)  # whatever the process drew before must not matter
    second = build_run(cfg).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_random_round0_fills_bank_from_untrained_net(tmp_path):
    data = tiny_dataset()
    trainer = Trainer(config(tmp_path, "method.round0=random"), tiny_backbone(), data, data, data)
    result = trainer.fit()
    assert [r["round"] for r in result.rounds] == [1, 2]


def test_truncated_checkpoint_gives_clear_error(tmp_path):
    data = tiny_dataset()
    Trainer(config(tmp_path), tiny_backbone(), data, data, data).fit(stop_after_epochs=1)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        Trainer(config(tmp_path, "run.resume=true"), tiny_backbone(), data, data, data).fit()


def test_neighbours_must_be_below_dataset_size(tmp_path):
    data = tiny_dataset(n=8)
    with pytest.raises(ValueError, match="method.neighbours: got 8, expected < the number of training images N = 8"):
        Trainer(config(tmp_path, "method.neighbours=8"), tiny_backbone(), data)


def test_round_end_evaluator_is_built_by_name_from_the_registry(tmp_path):
    """eval.monitor picks a registered evaluator; its numbers reach the round records."""
    from and_plugin import EVALUATORS, ConfigError
    from and_plugin.evaluation.monitor import KNNMonitor

    calls = []

    class Counting(KNNMonitor):
        def evaluate(self, model, bank, device):
            calls.append(tuple(bank.shape))
            return {**super().evaluate(model, bank, device), "calls": len(calls)}

    EVALUATORS.register("counting_test_monitor", force=True)(Counting)
    try:
        config = load_config(None, [
            "data.dataset=synthetic", "model.backbone=small_cnn", "run.device=cpu", "run.progress=false",
            "optim.epochs_per_round=1", "method.rounds=1", "data.batch_size=8", "data.subset=16",
            "data.test_subset=8", "eval.monitor=counting_test_monitor", f"run.output_dir={tmp_path / 'run'}",
        ])
        parts = build_run(config)
        result = Trainer(config, parts.model, parts.train_set, parts.eval_train_set, parts.test_set).fit()
        assert [r["calls"] for r in result.rounds] == [1, 2] and "knn" in result.rounds[-1]
        assert calls[0][0] == len(parts.train_set)
    finally:
        EVALUATORS._entries.pop("counting_test_monitor", None)
    with pytest.raises(ConfigError, match=r"eval.monitor must be one of \['knn'\], got 'nope'"):
        load_config(None, ["eval.monitor=nope"])
