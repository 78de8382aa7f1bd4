"""The quick start (README's first command) runs both methods and prints its table."""

import importlib.util
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.py"


def test_quickstart_prints_per_round_table(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("quickstart", QUICKSTART)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--epochs-per-round", "1", "--rounds", "1", "--no-progress", "--output-dir", str(tmp_path)])
    assert [r["round"] for r in results["and"]] == [0, 1]
    assert len(results["instance"]) == 2  # kNN after 1 and 2 epochs: the same budgets as AND's rounds
    out = capsys.readouterr().out
    assert "instance kNN" in out and "AN consistency" in out
    assert f"{100 * results['and'][1]['knn']:.1f} %" in out
    assert (tmp_path / "and" / "metrics.jsonl").exists() and (tmp_path / "instance" / "metrics.jsonl").exists()
