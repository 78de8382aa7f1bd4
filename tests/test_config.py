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
        ("method.temperature=0", r"method.temperature must be a number > 0, got 0.0"),
        ("method.memory_momentum=2", r"method.memory_momentum must be a number in \[0, 1\], got 2.0"),
        ("method.rounds=0", r"method.rounds must be an integer >= 1, got 0"),
        ("method.rounds=two", r"method.rounds must be int, got 'two' \(str\)"),
        ("method.selection=greedy", r"method.selection must be one of \['curriculum', 'one_off', 'none'\], got 'greedy'"),
        ("data.batch_size=1.5", r"data.batch_size must be int, got 1.5 \(float\)"),
        ("run.precision=fp16", r"run.precision must be one of \['fp32', 'bf16'\], got 'fp16'"),
        ("optim.lr_milestones=[0.8, 0.4]", r"optim.lr_milestones must be increasing fractions in \(0, 1\), got \[0.8, 0.4\]"),
        ("run.resume=maybe", r"run.resume must be true, false or 'auto', got 'maybe'"),
        ("method.temperature=.inf", r"method.temperature must be a finite number, got inf"),
        ("optim.lr=.nan", r"optim.lr must be a finite number, got nan"),
        ("optim.lr_milestones=[0.4, .inf]", r"optim.lr_milestones\[1\] must be a finite number, got inf"),
        ("optim.lr=[0.1", r"override 'optim.lr=\[0.1': line 1, column 5: not valid YAML"),
        ("optim.round0_epochs=0", r"optim.round0_epochs must be null or an integer >= 1 \(to skip round 0 use method.round0=random\), got 0"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_instance_baseline_cannot_skip_its_only_round():
    with pytest.raises(ConfigError, match=r"method.round0 must be 'instance' when method.instance_only=true"):
        load_config(None, ["method.instance_only=true", "method.round0=random"])


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text", ["1e-3", "1E-3", "5e-4", "+1e3", "1.5e-2", ".5"])
def test_exponent_floats_read_as_numbers(text):
    """YAML 1.1 needs a dot in the mantissa (1e-3 would be the string '1e-3'); the loader reads both."""
    assert load_config(None, [f"optim.lr={text}"]).optim.lr == float(text)


def test_yaml_files_read_exponents_and_name_the_line_of_a_syntax_error(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("optim:\n  lr: 1e-3\n  weight_decay: 5E-4\n")
    cfg = load_config(good)
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (1e-3, 5e-4)
    bad = tmp_path / "bad.yaml"
    bad.write_text("method:\n  rounds: 2\n   neighbours: 3\n")
    with pytest.raises(ConfigError, match=rf"config file '{bad}': line 3, column \d+: not valid YAML"):
        load_config(bad)


def test_config_is_a_plain_dataclass():
    assert Config().validate().to_dict()["method"]["neighbours"] == 1
