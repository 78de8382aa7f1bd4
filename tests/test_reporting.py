"""The reporting callback: valid PNG plots per round and per run, a CSV and a table with the numbers."""

import csv
import io

import torch
from conftest import tiny_backbone, tiny_dataset
from PIL import Image
from rich.console import Console

from and_plugin import Trainer, load_config
from and_plugin.reporting import ReportingCallback, plot_run, probe_table, summary_table, table_text

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 500


def test_callback_writes_plots_csv_and_prints_the_numbers(tmp_path):
    torch.set_num_threads(1)
    config = load_config(None, [f"run.output_dir={tmp_path}", "run.device=cpu", "run.progress=false", "run.threads=1",
                                "optim.epochs_per_round=2", "method.rounds=2", "data.batch_size=32",
                                "model.embedding_dim=16", "eval.every_epochs=1"])
    buffer = io.StringIO()
    callback = ReportingCallback(console=Console(file=buffer, width=160, color_system=None))
    data = tiny_dataset()
    result = Trainer(config, tiny_backbone(), data, data, data, callbacks=[callback]).fit()
    for name in ("round_0.png", "round_1.png", "round_2.png", "summary.png"):
        assert_valid_png(tmp_path / "plots" / name)
    printed = buffer.getvalue()
    for record in result.rounds:
        assert f"{100 * record['knn']:.2f}" in printed and f"{100 * record['knn_bank']:.2f}" in printed
    assert "48" in printed and "50.00" in printed and "100.00" in printed  # 48 anchors = 50 % of 96, then all
    last = result.rounds[-1]
    assert f"{100 * last['consistency']:.2f}" in printed and f"{last['consistent']}" in printed
    rows = list(csv.DictReader((tmp_path / "rounds.csv").open()))
    assert [row["round"] for row in rows] == ["0", "1", "2"] and rows[1]["anchors"] == "48"


def test_table_text_shows_hand_made_numbers():
    rows = [{"round": 0, "knn": 0.289, "knn_bank": 0.27},
            {"round": 1, "knn": 0.373, "knn_bank": 0.35, "anchors": 12500, "anchor_fraction": 0.25,
             "consistency": 0.15, "consistent": 1875, "inconsistent": 10625}]
    text = table_text(summary_table(rows))
    for number in ("28.90", "27.00", "37.30", "35.00", "12,500", "25.00", "15.00", "1,875", "10,625"):
        assert number in text, number
    probes = table_text(probe_table({"conv5": {"dim": 4096, "top1": 0.776, "train_top1": 0.9}}))
    assert "conv5" in probes and "4,096" in probes and "77.60" in probes and "90.00" in probes


def test_plot_without_rounds_or_labels_still_writes_a_png(tmp_path):
    path = plot_run([{"round": 0, "epoch": 0}], [], tmp_path / "p.png")
    assert_valid_png(path)
    path = plot_run([], [{"round": 1}], tmp_path / "q.png", entropy=torch.ones(4), anchor_mask=torch.ones(4, dtype=torch.bool))
    assert_valid_png(path)
