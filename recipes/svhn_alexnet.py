"""SVHN, AlexNet, AND (Table 1: kNN 90.9 %, linear conv5 93.7 %).

    python recipes/svhn_alexnet.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/svhn_alexnet.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "svhn_alexnet.yaml")
