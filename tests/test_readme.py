"""The README's code example runs, and its quick-start commands are the ones CI uses."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_examples_run():
    blocks = python_blocks(README.read_text())
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})


def test_quick_start_is_two_commands_and_ci_calls_the_test_one():
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick.strip().splitlines()]
    assert commands == ["make quickstart", "make test"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_quick_start_numbers_are_generated_from_the_recorded_results():
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("quickstart", README.parent / "recipes" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recorded = json.loads(module.RECORDED.read_text())
    assert module.readme_block(recorded) in README.read_text(), (
        "README's quick-start numbers differ from benchmarks/results/accuracy/quickstart.json; "
        "run `python recipes/quickstart.py --update-readme`"
    )
