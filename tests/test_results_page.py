"""The results page's generator (docs/_ext/and_accuracy_results.py): tables come from the JSON files."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ext():
    spec = importlib.util.spec_from_file_location("and_accuracy_results", ROOT / "docs" / "_ext" / "and_accuracy_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("diff, expected", [
    ({"mean": 1.0, "sd": 0.2, "n": 3}, "**AND ahead**"),
    ({"mean": -1.0, "sd": 0.2, "n": 3}, "**instance ahead**"),
    ({"mean": 0.3, "sd": 0.5, "n": 3}, "level (within seed noise)"),  # 2 se = 0.58 > 0.3
    ({"mean": 5.0, "sd": 0.0, "n": 1}, "one seed: no verdict"),
    (None, "one seed: no verdict"),
])
def test_verdict_needs_two_standard_errors(ext, diff, expected):
    assert ext.verdict(diff) == expected


def test_tables_are_built_from_a_measured_run(ext, harness, tmp_path):
    common = ["--dataset", "digits", "--subset", "150", "--split", "val", "--val-size", "50",
              "--epochs-per-round", "1", "--rounds", "1", "--seeds", "0", "1", "--scratch", str(tmp_path / "s"),
              "--results", str(tmp_path / "res")]
    harness.main(["run", "--study", "t", "--setting", "plain", *common, "--", "data.batch_size=50"])
    harness.main(["run", "--study", "t", "--setting", "ctl", *common, "--arms", "and", "instance_restarts",
                  "--instance-from", "t/plain", "--", "data.batch_size=50", "method.neighbours=2"])
    results = tmp_path / "res"
    ctl = json.loads((results / "t" / "ctl.json").read_text())
    table = ext.accuracy_table(results)
    assert "`t/plain`" in table and "`t/ctl`" in table
    assert f"{ctl['summary']['and'][-1]['knn']['mean']:.1f} ±" in table
    restarts = ext.restarts_table(results)
    assert "`t/ctl`" in restarts and "`t/plain`" not in restarts  # only settings with the control arm
    assert f"{ctl['summary']['instance_restarts'][-1]['knn']['mean']:.1f}" in restarts
    details = ext.accuracy_details(results)
    assert "instance + restarts kNN" in details and "taken from `t/plain`" in details
    assert ext.measured_inline("t", "ctl", results).endswith("(CPU scale, 2 seeds)")
    assert "No CPU-scale setting has been measured on a test split" in ext.measured_table(results)  # val only
    harness.main(["run", "--study", "t", "--setting", "diag", *common, "--arms", "and", "--instance-from", "t/plain",
                  "--", "data.batch_size=50", "method.curriculum=label_filtered"])
    assert "`t/diag`" in ext.accuracy_table(results)
    index = json.loads((results / "index.json").read_text())
    for row in index:
        row["split"] = "test"  # as if measured on a test split: the diagnostic still stays off the recipes page
    (results / "index.json").write_text(json.dumps(index))
    measured = ext.measured_table(results)
    assert "`t/plain`" in measured and "`t/diag`" not in measured
    assert ext.measured_inline("t", "absent", results) == "pending"
