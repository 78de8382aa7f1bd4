"""Epochs per round N_ep = 50 / 100 / 200, CIFAR-10 / ResNet18 (Sec 4.2: 83.3 / 84.8 / 86.3 %).

    python recipes/ablation_epochs_per_round.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/ablation_epochs_per_round.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "ablation_epochs_per_round.yaml")
