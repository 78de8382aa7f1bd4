"""Any image folder, of any size, ResNet50: AND with a sharded memory bank (rank r holds a block of rows).

    torchrun --nproc_per_node=8 recipes/folder_resnet50_sharded.py --data-dir DIR [key=value ...]
    python recipes/folder_resnet50_sharded.py --data-dir DIR --slurm --slurm-profile slurm/profiles/multinode_8x8.yaml

Settings: configs/folder_resnet50_sharded.yaml; options: --help.
"""

from pathlib import Path

from and_plugin.cli import main

if __name__ == "__main__":
    main(Path(__file__).resolve().with_name("configs") / "folder_resnet50_sharded.yaml")
