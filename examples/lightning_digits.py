"""AND in a PyTorch Lightning / lightly project: scikit-learn's digits, no download.

The form of lightly's examples: a model, a transform, a data set,
``pl.Trainer(...).fit``. The only AND-specific pieces are
:class:`~and_plugin.lightning.ANDModule` (memory bank, loss, curriculum; rounds advance
at epoch boundaries) and the data set returning ``(image, target, index)``: the index
addresses the memory bank.

    # round 0 + 4 rounds x 8 epochs (as the quickstart)
    python examples/lightning_digits.py
    # two views per image (lightly's MultiViewTransform)
    python examples/lightning_digits.py --views 2
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
from lightly.transforms.multi_view_transform import MultiViewTransform
from torch import nn
from torch.utils.data import DataLoader

from and_plugin import load_config
from and_plugin.data import build_dataset, build_transform
from and_plugin.evaluation import extract_features, knn_accuracy
from and_plugin.lightning import ANDModule, KNNMonitor


class DigitsNet(nn.Module):
    """A small CNN for 1x16x16 digits and a linear embedding head.

    Shapes: (B, 1, 16, 16) → (B, 128).
    """

    embedding_dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.projection_head = nn.Linear(64, self.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x))  # ANDModule L2-normalises


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs-per-round", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=4, help="R, neighbourhood rounds after round 0"
    )
    parser.add_argument(
        "--views", type=int, default=1, help="augmented views per image (1 = the paper)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pl.seed_everything(args.seed, verbose=False)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    transform = build_transform("digits", train=True)
    if args.views > 1:
        transform = MultiViewTransform([transform] * args.views)
    dataset = build_dataset("digits", split="train", transform=transform)
    dataloader = DataLoader(
        dataset, batch_size=64, shuffle=True, drop_last=False, num_workers=0
    )

    # A constant lr: at short rounds the paper's step schedule collapses the lr inside
    # every round (see the docs' results page, where the schedule was chosen on a
    # validation split).
    config = load_config(
        None,
        [
            f"optim.epochs_per_round={args.epochs_per_round}",
            f"method.rounds={args.rounds}",
            "method.temperature=0.1",
            "data.batch_size=64",
            f"run.seed={args.seed}",
            "optim.lr_schedule=constant",
        ],
    )
    model = ANDModule(
        DigitsNet(), num_samples=len(dataset), config=config, labels=dataset.targets
    )

    test_transform = build_transform("digits", train=False)
    train_eval = DataLoader(
        build_dataset("digits", split="train", transform=test_transform), batch_size=256
    )
    test_eval = DataLoader(
        build_dataset("digits", split="test", transform=test_transform), batch_size=256
    )
    # The module L2-normalises, as in training.
    train_x, train_y = extract_features(model, train_eval)
    test_x, test_y = extract_features(model, test_eval)
    untrained = knn_accuracy(
        train_x, train_y, test_x, test_y, num_classes=10, k=200, temperature=0.1
    )
    knn = KNNMonitor(train_eval, test_eval, num_classes=10, k=200, temperature=0.1)
    trainer = pl.Trainer(
        max_epochs=model.total_epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[knn],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model=model, train_dataloaders=dataloader)

    print(
        f"AND on digits with Lightning: {len(dataset)} images, {args.views} view(s), "
        f"plan {model.plan}"
    )
    print(f"  the same network untrained: kNN top-1 {100 * untrained:.1f} %")
    for record in knn.history:
        state = f"round {record['round']} (epoch {record['epoch'] + 1})"
        knn_top1, bank_top1 = 100 * record["knn"], 100 * record["knn_bank"]
        print(f"  {state}: kNN top-1 {knn_top1:.1f} % (bank {bank_top1:.1f} %)")
    last = model.method.curriculum.state
    consistency = last.consistency if last else None
    if consistency is not None:
        ratio = 100 * consistency["ratio"]
        print(
            f"  last round: {last.num_anchors} anchors, "
            f"{ratio:.0f} % of their neighbourhoods class-consistent"
        )
    return knn.history


if __name__ == "__main__":
    main()
