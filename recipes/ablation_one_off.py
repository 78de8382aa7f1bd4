"""One-off instead of curriculum neighbourhood discovery, CIFAR-10 / ResNet18 (Table 6: 84.2 % vs 86.3 %).

    python recipes/ablation_one_off.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/ablation_one_off.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "ablation_one_off.yaml")
