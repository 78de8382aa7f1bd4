"""CIFAR-10, ResNet101, AND (Table 4: kNN 88.4 %).

    python recipes/cifar10_resnet101.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/cifar10_resnet101.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "cifar10_resnet101.yaml")
