"""ImageNet, AlexNet, AND (Table 2: kNN 31.3 %, linear conv1..conv5 15.6/27.0/35.9/39.7/37.9 %, FC 36.7 %).

    python recipes/imagenet_alexnet.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/imagenet_alexnet.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "imagenet_alexnet.yaml")
