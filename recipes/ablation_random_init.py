"""Round 0 from a random network, CIFAR-10 / ResNet18 (Table 5: 85.7 % vs 86.3 %).

    python recipes/ablation_random_init.py [--smoke] [--slurm] [--data-dir DIR] [key=value ...]

Settings and the paper's numbers: configs/ablation_random_init.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "ablation_random_init.yaml")
