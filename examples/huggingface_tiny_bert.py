"""A HuggingFace BERT built from a tiny config (random weights, nothing downloaded), trained
through a LightningModule with dict batches and no forward.

Sites are found by default: each layer's `GELUActivation` and the pooler's `Tanh`; sequences
`(N, T, D)` are averaged over tokens (pass `spatial="positions"` to make tokens samples).

    python examples/huggingface_tiny_bert.py [--epochs 2]     # needs `pip install transformers`
"""

from __future__ import annotations

import argparse

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader

from lightning_complexity import ComplexityMonitor


def token_batches(count: int, seed: int, tokens: int = 16, vocab: int = 100) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (count, tokens), generator=g)
    labels = (ids[:, :4].sum(1) % 2).long()  # a learnable rule on the first tokens
    return [{"input_ids": ids[i], "attention_mask": torch.ones(tokens, dtype=torch.long), "labels": labels[i]} for i in range(count)]


class TinyBert(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=32, num_labels=2)
        self.model = BertForSequenceClassification(config)

    def training_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        out = self.model(**batch)
        self.log("val_loss", out.loss)
        self.log("val_acc", (out.logits.argmax(-1) == batch["labels"]).float().mean())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    L.seed_everything(0, verbose=False)
    monitor = ComplexityMonitor()
    trainer = L.Trainer(max_epochs=args.epochs, callbacks=[monitor], logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(TinyBert(), DataLoader(token_batches(256, 0), batch_size=32, shuffle=True), DataLoader(token_batches(128, 1), batch_size=32))
    for site in monitor.sites["affinity"]:
        print(f"{site} ({monitor.site_info[site]['type']}): affinity {monitor.history.latest()[('affinity', site)]:.4f}")


if __name__ == "__main__":
    main()
