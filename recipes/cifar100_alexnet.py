"""CIFAR-100, AlexNet, AND (Table 1: kNN 41.5 %, linear conv5 47.9 %).

    python recipes/cifar100_alexnet.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/cifar100_alexnet.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "cifar100_alexnet.yaml")
