"""Learning-rate schedules: each formula against a direct float64 evaluation, and the config boundary."""

import math

import pytest

from and_plugin.config import ConfigError, load_config
from and_plugin.schedule import LR_SCHEDULES, learning_rate, schedule_factor
from and_plugin.trainer import learning_rate as trainer_learning_rate


def _cfg(*overrides):
    return load_config(None, list(overrides))


def test_default_is_the_papers_step_schedule_as_fractions_of_the_round():
    cfg = _cfg()
    assert cfg.optim.lr_schedule == "step"
    lrs = [learning_rate(cfg, e, 200) for e in (0, 79, 80, 119, 120, 159, 160, 199)]
    expected = [0.03, 0.03, 3e-3, 3e-3, 3e-4, 3e-4, 3e-5, 3e-5]
    assert lrs == pytest.approx(expected, rel=1e-12)
    # Scaled to a 4-epoch round the same fractions fall on epochs 1, 2, 3: the collapse short rounds suffer.
    assert [learning_rate(cfg, e, 4) for e in range(4)] == pytest.approx([0.03, 3e-3, 3e-4, 3e-5], rel=1e-12)


def test_trainer_learning_rate_delegates_with_the_same_signature():
    for overrides in ([], ["optim.lr_schedule=cosine"], ["optim.lr_schedule=constant", "optim.lr=0.1"]):
        cfg = _cfg(*overrides)
        assert [trainer_learning_rate(cfg, e, 7) for e in range(7)] == [learning_rate(cfg, e, 7) for e in range(7)]


def test_step_epochs_uses_absolute_milestones_as_the_authors_code():
    cfg = _cfg("optim.lr_schedule=step_epochs", "optim.lr_milestone_epochs=[2, 5]", "optim.lr_gamma=0.5")
    assert [learning_rate(cfg, e, 6) for e in range(6)] == pytest.approx([0.03, 0.03, 0.015, 0.015, 0.015, 0.0075])
    # The default milestones 80/120/160 never trigger in a 20-epoch round.
    short = _cfg("optim.lr_schedule=step_epochs")
    assert {learning_rate(short, e, 20) for e in range(20)} == {0.03}


def test_cosine_matches_the_closed_form_and_restarts_at_the_base_lr():
    cfg = _cfg("optim.lr_schedule=cosine", "optim.lr=0.2", "optim.lr_min=0.02")
    for epochs in (1, 4, 9):
        for e in range(epochs):
            expected = 0.02 + (0.2 - 0.02) * 0.5 * (1.0 + math.cos(math.pi * e / epochs))
            assert learning_rate(cfg, e, epochs) == pytest.approx(expected, rel=1e-12)
        assert learning_rate(cfg, 0, epochs) == pytest.approx(0.2)
    lrs = [learning_rate(cfg, e, 9) for e in range(9)]
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and min(lrs) > 0.02


def test_constant_and_batch_scaling():
    cfg = _cfg("optim.lr_schedule=constant", "optim.lr_reference_batch=64", "data.batch_size=256")
    assert [learning_rate(cfg, e, 5) for e in range(5)] == pytest.approx([0.12] * 5)


@pytest.mark.parametrize("schedule", LR_SCHEDULES)
def test_every_schedule_starts_each_round_at_the_base_lr(schedule):
    assert schedule_factor(schedule, 0, 3, milestones=[0.1], milestone_epochs=[1]) == 1.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr_schedule=linear", r"optim.lr_schedule must be one of \['step', 'step_epochs', 'cosine', 'constant'\], got 'linear'"),
        ("optim.lr_milestone_epochs=[120, 80]", r"optim.lr_milestone_epochs must be increasing integers >= 1, got \[120, 80\]"),
        ("optim.lr_milestone_epochs=[0]", r"optim.lr_milestone_epochs must be .*, got \[0\]"),
        ("optim.lr_min=0.5", r"optim.lr_min must be a number in \[0, optim.lr = 0.03\), got 0.5"),
        ("optim.lr_min=-1", r"optim.lr_min must be .*, got -1.0"),
    ],
)
def test_bad_schedule_settings_name_key_value_and_allowed(override, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(override)


def test_schedule_factor_rejects_unknown_names_and_epochs_outside_the_round():
    with pytest.raises(ValueError, match="lr_schedule: got 'poly'"):
        schedule_factor("poly", 0, 4)
    with pytest.raises(ValueError, match="epoch: got 4, expected 0 <= epoch < epochs_in_round = 4"):
        schedule_factor("constant", 4, 4)
