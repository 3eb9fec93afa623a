"""A transformers BERT text classifier, trained here: the weight-only targets' test model.

``BertForSequenceClassification`` as transformers builds it (2 layers, hidden 128, FFN 512, 4 classes), trained
for ~12 s on a task it can learn from its tokens: which of four token ranges occurs most often in a sequence of
16 tokens. Trained, its logits carry real decisions (about 89 % held-out accuracy), so a weight-only artifact
that loses accuracy shows it; random BERT logits hardly vary between inputs. ``train``'s keywords make a
larger one (benchmarks/int8_speedup.py's ``torch_bert``: 4 layers, hidden 256, 64 tokens).
"""

from __future__ import annotations

import numpy as np

VOCAB, LENGTH, CLASSES = 64, 16, 4


def samples(count: int, seed: int, length: int = LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids int64 [count, length], labels): the label is the token range (id // 16) seen most often."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (count, length))
    counts = np.stack([(ids // 16 == c).sum(1) for c in range(CLASSES)], 1) + rng.random((count, CLASSES)) * 0.5
    return ids.astype(np.int64), counts.argmax(1)


def train(steps: int = 400, *, length: int = LENGTH, hidden: int = 128, layers: int = 2, lr: float = 1e-3):
    """The classifier in eval mode, wrapped to take ``input_ids`` [1, length] and return ``logits``."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=4, intermediate_size=4 * hidden,
                                     max_position_embeddings=length, num_labels=CLASSES,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        ids, labels = samples(64, seed=1000 + step, length=length)
        loss = torch.nn.functional.cross_entropy(model(input_ids=torch.from_numpy(ids)).logits,
                                                 torch.from_numpy(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids):
            return self.bert(input_ids=input_ids).logits

    return Logits().eval()
