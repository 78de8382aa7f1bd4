"""Config: YAML → dataclasses, validation errors name key, value and what is allowed."""

import pytest

from and_plugin.config import Config, ConfigError, load_config, parse_override, save_config


def test_defaults_are_the_paper_settings():
    cfg = load_config(None)
    assert (cfg.method.temperature, cfg.method.memory_momentum, cfg.method.neighbours, cfg.method.rounds) == (0.1, 0.5, 1, 4)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov, cfg.optim.weight_decay) == (0.03, 0.9, True, 5e-4)
    assert cfg.optim.epochs_per_round == 200 and cfg.optim.lr_milestones == [0.4, 0.6, 0.8]


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method:\n  neighbours: 5\noptim:\n  lr: 0.1\n")
    cfg = load_config(path, ["optim.lr=0.2", "data.root=/data", "optim.lr_milestones=[0.5, 0.75]"])
    assert cfg.method.neighbours == 5 and cfg.optim.lr == 0.2 and cfg.data.root == "/data"
    assert cfg.optim.lr_milestones == [0.5, 0.75]


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(None, ["method.selection=one_off", "run.seed=7"])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("method.neighbors=3", r"method.neighbors: unknown key; allowed keys in method: \['temperature'"),
        ("modle.backbone=x", r"modle: unknown key; allowed keys: \['name', 'model'"),
        ("method.temperature=0", r"method.temperature: got 0.0, expected a number > 0"),
        ("method.memory_momentum=2", r"method.memory_momentum: got 2.0, expected a number in \[0, 1\]"),
        ("method.rounds=0", r"method.rounds: got 0, expected an integer >= 1"),
        ("method.rounds=two", r"method.rounds: got 'two' \(str\), expected int"),
        ("method.selection=greedy", r"method.selection: got 'greedy', expected one of \['curriculum', 'one_off'\]"),
        ("data.batch_size=1.5", r"data.batch_size: got 1.5 \(float\), expected int"),
        ("run.precision=fp16", r"run.precision: got 'fp16', expected one of \['fp32', 'bf16'\]"),
        ("optim.lr_milestones=[0.8, 0.4]", r"optim.lr_milestones: got \[0.8, 0.4\], expected increasing fractions"),
        ("run.resume=maybe", r"run.resume: got 'maybe' \(str\), expected bool"),
        ("optim.round0_epochs=0", r"optim.round0_epochs: got 0, expected null or an integer >= 1 \(to skip round 0 use method.round0=random\)"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_config_is_a_plain_dataclass():
    assert Config().validate().to_dict()["method"]["neighbours"] == 1
