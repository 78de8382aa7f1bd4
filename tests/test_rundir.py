"""run.resume=auto never rewrites the logs of an earlier run that left no checkpoint."""

import pytest

from and_plugin import load_config
from and_plugin.rundir import plan_resume, resume_decision


def test_auto_without_a_checkpoint_keeps_earlier_logs_aside(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "epoch", "epoch": 0}\n')
    (tmp_path / "config.yaml").write_text("name: earlier\n")
    config = load_config(None, ["run.resume=auto", f"run.output_dir={tmp_path}"])
    assert plan_resume(config, tmp_path) is False  # nothing to continue
    with pytest.warns(UserWarning, match="no checkpoint to continue; starting over, the earlier logs kept as"):
        assert resume_decision(config, tmp_path) is False
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert [name.split("-")[0] for name in kept] == ["config.yaml.kept", "metrics.jsonl.kept"]
    assert (tmp_path / kept[1]).read_text() == '{"kind": "epoch", "epoch": 0}\n'


def test_auto_in_an_empty_or_fresh_directory_changes_nothing(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")  # a start that logged no epoch yet
    config = load_config(None, ["run.resume=auto", f"run.output_dir={tmp_path}"])
    assert resume_decision(config, tmp_path) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
