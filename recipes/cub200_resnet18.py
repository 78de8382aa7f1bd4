"""CUB-200-2011, ResNet18, AND (Table 3: kNN 14.4 %).

    python recipes/cub200_resnet18.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/cub200_resnet18.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "cub200_resnet18.yaml")
