"""The quick start (README's first command) runs both methods and the baselines, prints its table
and writes its results file; the recorded file renders to the README's numbers."""

import importlib.util
import json
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.py"


def load_quickstart():
    spec = importlib.util.spec_from_file_location("quickstart", QUICKSTART)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_prints_per_round_table_and_writes_results(tmp_path, capsys):
    module = load_quickstart()
    results = module.main(["--epochs-per-round", "1", "--rounds", "1", "--no-progress", "--output-dir", str(tmp_path)])
    assert [r["round"] for r in results["curves"]["and"]] == [0, 1]
    assert len(results["curves"]["instance"]) == 2  # kNN after 1 and 2 epochs: the same budgets as AND's rounds
    # Same seed, same initial weights, same round 0: the curves share their first point.
    assert results["curves"]["and"][0]["knn"] == results["curves"]["instance"][0]["knn"]
    assert 0.5 < results["baselines"]["raw_pixels"] <= 1.0  # raw-pixel kNN on digits is strong
    assert 0.0 < results["baselines"]["untrained"] <= 1.0
    out = capsys.readouterr().out
    assert "instance kNN" in out and "AN consistency" in out and "raw pixels" in out and "docs/results.md" in out
    assert f"{100 * results['curves']['and'][1]['knn']:.1f} %" in out
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    assert (tmp_path / "and" / "metrics.jsonl").exists() and (tmp_path / "instance" / "metrics.jsonl").exists()


def test_update_readme_rewrites_only_the_marked_block(tmp_path):
    module = load_quickstart()
    recorded = json.loads(module.RECORDED.read_text())
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{module.README_BEGIN}\nstale 12.3 %\n{module.README_END}\noutro\n")
    module.update_readme(readme, module.RECORDED)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "stale" not in text
    assert module.readme_block(recorded) in text
    final = recorded["curves"]["and"][-1]["knn"]
    assert f"{100 * final:.1f} %" in text
