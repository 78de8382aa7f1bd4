"""CIFAR-10, AlexNet, the Instance/NPID baseline (Table 1: kNN 60.3 %, linear conv5 70.1 %).

    python recipes/cifar10_instance.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/cifar10_instance.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "cifar10_instance.yaml")
