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


@pytest.mark.parametrize("differences, expected", [
    ([0.9, 1.0, 1.1, 1.05, 0.95], "**AND ahead**"),
    ([-0.9, -1.0, -1.1, -1.05, -0.95], "**instance ahead**"),
    ([0.4, 0.7, 1.0], "level (interval holds 0)"),  # 2 se = 0.35 < 0.7, but t = 4.04 < t(0.975, 2) = 4.30
    ([5.0], "one seed: no verdict"),
    ([], "one seed: no verdict"),
])
def test_verdict_is_the_paired_t_test(ext, harness, differences, expected):
    assert ext.verdict(harness.paired_test(differences)) == expected


def test_interval_shows_the_mean_and_its_95_percent_interval(ext, harness):
    assert ext.interval(harness.paired_test([1.0, 2.0, 3.0])) == "+2.0 [-0.5, +4.5]"
    assert ext.interval(harness.paired_test([1.5])) == "+1.5" and ext.interval(None) == "—"


def test_length_curve_section_from_a_measured_length_study(ext, harness, tmp_path):
    common = ["--dataset", "digits", "--subset", "150", "--split", "val", "--val-size", "50", "--rounds", "1",
              "--seeds", "0", "1", "--scratch", str(tmp_path / "s"), "--results", str(tmp_path / "res")]
    overrides = ["--", "optim.lr_schedule=constant", "data.batch_size=50"]
    harness.main(["run", "--study", "d-length", "--setting", "long", *common, "--epochs-per-round", "2",
                  "--arms", "instance", "--eval-every", "1", *overrides])
    harness.main(["run", "--study", "d-length", "--setting", "own", *common, "--epochs-per-round", "1",
                  "--arms", "and", "instance", *overrides])
    for e in ("1", "2"):
        harness.main(["run", "--study", "d-length", "--setting", f"L{e}", *common, "--epochs-per-round", e,
                      "--arms", "and", "instance_restarts", "--instance-from", "d-length/long", *overrides])
    curve = json.loads((tmp_path / "res" / "length-curve.json").read_text())
    (study,) = curve["studies"]
    assert [p["epochs_per_round"] for p in study["points"]] == [1, 1, 2] and not study["diagnostics"]
    assert study["instance_checks"] == [{"setting": "own", "long_run": "long", "seeds": [0, 1], "points": 4,
                                         "equal": True}]
    assert all(p["diff"]["n"] == 2 and len(p["diff"]["ci"]) == 2 for p in study["points"])
    assert [p["diff_restarts"]["n"] if p["diff_restarts"] else None for p in study["points"]] in ([None, 2, 2],
                                                                                                 [2, None, 2])
    assert (tmp_path / "res" / "length-curve.svg").read_text().lstrip().startswith("<?xml")
    section = ext.length_curve(tmp_path / "res")
    assert "### `d-length`" in section and "Measured at 1, 1, 2 epochs per round." in section
    assert "its 4 kNN points (seeds 0, 1) equal the long run `long`" in section
    assert ext.interval(study["points"][1]["diff"]) in section
    assert "`d-length/long`" not in ext.accuracy_table(tmp_path / "res")  # instance-only: no AND row


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
