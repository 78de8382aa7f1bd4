"""Ablation of the neighbourhood size k on CIFAR-10 / ResNet18 (Fig 4; k = 1: 86.3 %).

    python recipes/ablation_neighbours.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/ablation_neighbours.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "ablation_neighbours.yaml")
