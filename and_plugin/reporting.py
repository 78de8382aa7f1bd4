"""Plots and a summary table of a run: the :class:`ReportingCallback` of every recipe.

Files written into the run's ``output_dir`` (rank 0 only, like every trainer callback):

- ``plots/round_<r>.png`` at the end of every round r, and ``plots/summary.png`` at the end of
  the run, each with three panels:

  1. weighted-kNN top-1 per epoch (where evaluated) and per round, with recomputed training
     features and with the memory bank;
  2. anchor-neighbourhood class consistency per round, like Fig 6 of the paper: the numbers of
     class-consistent and class-inconsistent anchor neighbourhoods (labels used for monitoring
     only);
  3. the entropy histogram of the round's selected anchors against the other samples
     (``trainer.curriculum.state.entropy`` / ``anchor_mask``) — anchors are the lowest-entropy
     samples, so their histogram sits to the left.

- ``rounds.csv``: one row per round (the numbers of the table below).

At the end of the run a rich table is printed: per round the kNN top-1 (recomputed and bank),
the anchors (count and %) and the consistency. Plots use matplotlib's Agg canvas directly
(no pyplot, no display needed).

Example:
    >>> from and_plugin.reporting import summary_table, table_text
    >>> rows = [{"round": 0, "knn": 0.5, "knn_bank": 0.45},
    ...         {"round": 1, "knn": 0.6, "knn_bank": 0.58, "anchors": 25, "anchor_fraction": 0.25,
    ...          "consistency": 0.4, "consistent": 10, "inconsistent": 15}]
    >>> "60.00" in table_text(summary_table(rows))
    True
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["ReportingCallback", "default_console", "plot_run", "probe_table", "summary_table", "table_text", "write_rounds_csv"]

CSV_COLUMNS = ("round", "knn", "knn_bank", "anchors", "anchor_fraction", "consistency", "consistent", "inconsistent")


def _percent(value: Any) -> str:
    return "—" if value is None else f"{100.0 * float(value):.2f}"


def _count(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def summary_table(rounds: Sequence[dict[str, Any]], title: str = "AND per round") -> Table:
    """A rich table of the round records (``FitResult.rounds`` / ``trainer.round_records``).

    Args:
        rounds: Records with "round" and optionally "knn", "knn_bank", "anchors",
            "anchor_fraction", "consistency", "consistent", "inconsistent" (fractions in [0, 1]).
        title: The table's title.

    Returns:
        Columns: round, kNN % (recomputed features), bank kNN %, anchors, anchors %,
        consistency %, consistent, inconsistent.
    """
    table = Table(title=title, caption="weighted kNN top-1 on the test set. kNN: training features recomputed "
                  "through the test transform (the reported number); bank kNN: the memory bank (what the reference "
                  "prints). consistent / inconsistent: anchor neighbourhoods whose members share / do not share "
                  "the anchor's class (monitoring only)")
    for column in ("round", "kNN %", "bank kNN %", "anchors", "anchors %", "consistency %", "consistent",
                   "inconsistent"):
        table.add_column(column, justify="right")
    for record in rounds:
        table.add_row(
            str(record.get("round", "—")),
            _percent(record.get("knn")),
            _percent(record.get("knn_bank")),
            _count(record.get("anchors")),
            _percent(record.get("anchor_fraction")),
            _percent(record.get("consistency")),
            _count(record.get("consistent")),
            _count(record.get("inconsistent")),
        )
    return table


def probe_table(results: dict[str, dict[str, Any]], title: str = "Linear probes (frozen backbone)") -> Table:
    """A rich table of linear-probe results: layer → {"top1", "train_top1", "dim", ...}."""
    table = Table(title=title, caption="test top-1 after the last probe epoch (no model selection on test)")
    for column in ("layer", "dim", "test top-1 %", "train top-1 %"):
        table.add_column(column, justify="right")
    for layer, result in results.items():
        table.add_row(layer, _count(result.get("dim")), _percent(result.get("top1")), _percent(result.get("train_top1")))
    return table


def table_text(table: Table, width: int = 140) -> str:
    """The table rendered as plain text (for logs and tests)."""
    console = Console(width=width, record=True, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    console.print(table)
    text = console.export_text()
    console.file.close()
    return text


def default_console() -> Console:
    """A console on stdout; 120 columns when stdout is not a terminal (logs, SLURM output files)."""
    console = Console()
    return console if console.is_terminal else Console(width=120)


def write_rounds_csv(rounds: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Writes one row per round with the columns of :data:`CSV_COLUMNS`."""
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for record in rounds:
            writer.writerow({key: record.get(key, "") for key in CSV_COLUMNS})


def plot_run(
    history: Sequence[dict[str, Any]],
    rounds: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    entropy: Any = None,
    anchor_mask: Any = None,
    title: str = "",
) -> Path:
    """Draws the three panels (kNN, consistency, entropy histogram) into a PNG file.

    Args:
        history: Epoch records (``trainer.history``): "round", "epoch" and optionally "knn",
            "knn_bank".
        rounds: Round records (``trainer.round_records``).
        path: The PNG file to write (written to a temporary name, then renamed).
        entropy: Entropy of every sample in the current round, tensor or array of shape (N,).
        anchor_mask: Bool mask of the current round's anchors, shape (N,).
        title: Figure title.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(16, 4.5))
    figure.subplots_adjust(left=0.05, right=0.98, bottom=0.14, top=0.84, wspace=0.22)
    FigureCanvasAgg(figure)
    knn_axis, consistency_axis, entropy_axis = figure.subplots(1, 3)
    if title:
        figure.suptitle(title)

    # 1. kNN per epoch (where evaluated) and per round (always, at each round's end).
    boundaries = []
    for key, label, style in (("knn", "recomputed features", "-o"), ("knn_bank", "memory bank", "--s")):
        points = [(i + 1, 100.0 * r[key]) for i, r in enumerate(history) if r.get(key) is not None]
        if points:
            knn_axis.plot(*zip(*points), style, label=label, markersize=4)
    for i, record in enumerate(history):
        if i + 1 < len(history) and history[i + 1].get("round") != record.get("round"):
            boundaries.append(i + 1.5)
    for x in boundaries:
        knn_axis.axvline(x, color="grey", linestyle=":", linewidth=1)
    knn_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    knn_axis.set(xlabel="epoch (all rounds; dotted lines: round starts)", ylabel="weighted kNN top-1 (%)",
                 title="kNN accuracy")
    if knn_axis.has_data():
        knn_axis.legend(loc="lower right")
    else:
        knn_axis.text(0.5, 0.5, "no kNN evaluation yet", ha="center", va="center", transform=knn_axis.transAxes)

    # 2. Fig 6: consistent vs inconsistent anchor neighbourhoods per round.
    counted = [r for r in rounds if r.get("consistent") is not None]
    if counted:
        xs = [int(r["round"]) for r in counted]
        width = 0.38
        consistency_axis.bar([x - width / 2 for x in xs], [r["consistent"] for r in counted], width,
                             label="class consistent", color="tab:green")
        consistency_axis.bar([x + width / 2 for x in xs], [r["inconsistent"] for r in counted], width,
                             label="class inconsistent", color="tab:red")
        consistency_axis.set_xticks(xs)
        consistency_axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        consistency_axis.legend(loc="upper left")
    else:
        consistency_axis.text(0.5, 0.5, "no neighbourhood round yet\n(or no labels to monitor)", ha="center",
                              va="center", transform=consistency_axis.transAxes)
    consistency_axis.set(xlabel="round", ylabel="anchor neighbourhoods", title="Neighbourhood quality (Fig 6)")

    # 3. Entropy of the selected anchors vs the rest.
    if entropy is not None and anchor_mask is not None:
        values = _numpy(entropy).astype(float)
        mask = _numpy(anchor_mask).astype(bool)
        bins = _bins(values)
        if mask.any():
            entropy_axis.hist(values[mask], bins=bins, alpha=0.6, label=f"anchors ({int(mask.sum()):,})",
                              color="tab:blue")
        if (~mask).any():
            entropy_axis.hist(values[~mask], bins=bins, alpha=0.6, label=f"others ({int((~mask).sum()):,})",
                              color="tab:orange")
        entropy_axis.legend(loc="upper right")
        entropy_axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        entropy_axis.text(0.5, 0.5, "round 0: instance learning\n(no anchors selected)", ha="center", va="center",
                          transform=entropy_axis.transAxes)
    entropy_axis.set(xlabel="entropy H(x̃_i)", ylabel="samples", title="Entropy: anchors vs others")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".tmp.png")
    figure.savefig(temporary, dpi=90)
    os.replace(temporary, path)
    return path


def _numpy(values: Any) -> Any:
    import numpy as np

    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy() if values.dtype.is_floating_point else values.detach().cpu().numpy()
    return np.asarray(values)


def _bins(values: Any) -> Any:
    import numpy as np

    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, 31)


class ReportingCallback:
    """Trainer callback: a plot per round and per run, a CSV and a rich summary table.

    Args:
        output_dir: Where ``plots/`` and ``rounds.csv`` go; the trainer's ``output_dir`` if None.
        plots: Write the PNG plots.
        table: Print the summary table at the end of the run.
        console: The rich console to print to (a new one on stdout if None).

    Example:
        >>> from and_plugin import Trainer
        >>> callback = ReportingCallback(table=False)  # Trainer(config, ..., callbacks=[callback])
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str] | None = None,
        plots: bool = True,
        table: bool = True,
        console: Console | None = None,
    ) -> None:
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.plots = plots
        self.table = table
        self.console = console

    def _dir(self, trainer: Any) -> Path:
        return self.output_dir if self.output_dir is not None else Path(trainer.output_dir)

    def _plot(self, trainer: Any, name: str, round_index: int | None, pending: dict[str, Any] | None = None) -> None:
        state = getattr(getattr(trainer, "curriculum", None), "state", None)
        use_state = state is not None and (round_index is None or round_index > 0)
        title = f"{trainer.config.name}" + (f" — round {round_index}" if round_index is not None else "")
        history = list(trainer.history) + ([pending] if pending is not None else [])
        plot_run(
            history,
            trainer.round_records,
            self._dir(trainer) / "plots" / name,
            entropy=state.entropy if use_state else None,
            anchor_mask=state.anchor_mask if use_state else None,
            title=title,
        )

    def on_round_end(self, trainer: Any, record: dict[str, Any]) -> None:
        """Writes ``plots/round_<r>.png``."""
        if self.plots:
            # trainer.history gets the round's last epoch only after this call: plot its kNN from ``record``.
            pending = {"round": record["round"], "knn": record.get("knn"), "knn_bank": record.get("knn_bank")}
            self._plot(trainer, f"round_{int(record['round'])}.png", int(record["round"]), pending)

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        """Writes ``plots/summary.png`` and ``rounds.csv``; prints the table."""
        directory = self._dir(trainer)
        directory.mkdir(parents=True, exist_ok=True)
        if self.plots:
            self._plot(trainer, "summary.png", None)
        write_rounds_csv(result.rounds, directory / "rounds.csv")
        if self.table:
            console = self.console or default_console()
            console.print(summary_table(result.rounds, title=f"{trainer.config.name}: AND per round"))
            console.print(f"run directory: {directory} (metrics.jsonl, rounds.csv, plots/, checkpoint.pt)",
                          markup=False, soft_wrap=True)
