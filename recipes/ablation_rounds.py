"""Ablation of the number of curriculum rounds R on CIFAR-10 / ResNet18 (Fig 5; R = 4: 86.3 %).

    python recipes/ablation_rounds.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/ablation_rounds.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "ablation_rounds.yaml")
