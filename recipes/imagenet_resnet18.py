"""ImageNet, ResNet18, AND (Sec 4.2: kNN 41.2 %).

    python recipes/imagenet_resnet18.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/imagenet_resnet18.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "imagenet_resnet18.yaml")
