"""Weight-only forms against fp32 and dynamic int8, per engine, on a transformer encoder and a decoder block.

Both are built by transformers from a config (nothing is downloaded): a BERT encoder (4 layers, hidden 256,
FFN 1024) and a GPT-2 decoder with its LM head (4 layers, hidden 256), 32 tokens, exported by
``torch.onnx.export(dynamo=True)``. edgekit converts each to fp32, dynamic int8 and the weight-only targets of
every engine; each artifact is timed through ``edgekit.load`` against its engine's fp32 sibling, interleaved in
rounds (median of per-round medians), and compared with it by cosine on the same token ids. The weights are
random, so the cosine is the measure of damage (no task accuracy).

    python benchmarks/weight_only.py [--threads N] [--rounds R]

Goals (issue 31): each weight-only form at most 0.35x (w4) / 0.55x (w8) of the fp32 file and not slower than
fp32 on its engine on the CPU it runs on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from convert import cpu_name, latencies_ms  # noqa: E402

TARGETS = {"onnx": ["fp32", "int8-dynamic", "w4", "w8"], "openvino": ["fp32", "w4", "w8"],
           "tflite": ["fp32", "dynamic", "w4"]}
TOKENS = 32


def _models(folder: Path) -> dict[str, Path]:
    import torch
    import transformers

    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
        max_position_embeddings=64)).eval()
    gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=1000, n_positions=64, n_embd=256,
                                                               n_layer=4, n_head=4)).eval()

    class Encoder(torch.nn.Module):
        def forward(self, input_ids):
            return bert(input_ids=input_ids).last_hidden_state

    class Decoder(torch.nn.Module):
        def forward(self, input_ids):
            return gpt(input_ids=input_ids, use_cache=False).logits

    paths = {}
    for name, module in (("bert_encoder", Encoder()), ("gpt2_decoder", Decoder())):
        paths[name] = folder / f"{name}.onnx"
        torch.onnx.export(module, (torch.ones(1, TOKENS, dtype=torch.long),), str(paths[name]), dynamo=True,
                          input_names=["input_ids"], output_names=["output"], verbose=False)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    import edgekit

    print(f"CPU: {cpu_name()}; {args.threads} threads")
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 1000, (1, TOKENS)).astype(np.int64)}
    with tempfile.TemporaryDirectory() as scratch:
        for name, source in _models(Path(scratch)).items():
            print(f"\n## {name}\n| form | size MB | size x fp32 | p50 ms | speed x fp32 | cosine to fp32 |")
            print("| --- | --- | --- | --- | --- | --- |")
            for family, variants in TARGETS.items():
                made = edgekit.convert(source, [f"{family}-{v}" for v in variants], validate_outputs=False,
                                       check_speed=False, output_dir=Path(scratch) / name, keep_going=True)
                ok = {r.target: Path(r.artifact) for r in made if r.artifact is not None}
                latency = latencies_ms(ok, args.threads, args.rounds, args.calls)
                outputs, sizes = {}, {}
                for target, path in ok.items():
                    with edgekit.load(path, threads=args.threads) as runtime:
                        outputs[target] = np.asarray(next(iter(runtime.run(feeds).values())), np.float32).ravel()
                    companions = [path.with_suffix(".bin"), Path(f"{path}.data")]  # an IR's weights, ONNX's
                    sizes[target] = path.stat().st_size + sum(f.stat().st_size for f in companions if f.is_file())
                base = f"{family}-fp32"
                for result in made:
                    target = result.target
                    if target not in ok:
                        print(f"| {target} | failed: {result.error} |")
                        continue
                    a, b = outputs[target], outputs[base]
                    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
                    print(f"| {target} | {sizes[target] / 1e6:.2f} | {sizes[target] / sizes[base]:.2f} | "
                          f"{latency[target]:.2f} | {latency[base] / latency[target]:.2f} | {cosine:.4f} |")


if __name__ == "__main__":
    main()
