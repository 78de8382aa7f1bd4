"""CIFAR-10, AlexNet, AND (Table 1: kNN 74.8 %, linear conv5 77.6 %).

    python recipes/cifar10_alexnet.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/cifar10_alexnet.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "cifar10_alexnet.yaml")
