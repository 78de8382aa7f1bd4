"""CIFAR-10, ResNet18, AND (Table 4: kNN 86.3 %).

    python recipes/cifar10_resnet18.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/cifar10_resnet18.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "cifar10_resnet18.yaml")
