"""int8 against float and against each engine's own quantizer, per architecture and thread count, side by side.

For each architecture (built the way its users build it, in Keras or, ``torch_*``, in PyTorch (torchvision's
MobileNetV3 blocks, HardSwish/HardSigmoid ops in ONNX: the tests' small net, and ``torch_mobilenet_v3_small``,
torchvision's mobilenet_v3_small layout in full, both trained on digits; transformers' BERT, trained here);
BatchNorm statistics measured on data)
this converts with edgekit's defaults to fp32 and int8 on every engine, quantizes the same float model with
the engine's own quantizer at its defaults and at the other settings people try, then, per thread count, times
every artifact through ``edgekit.load``, interleaved in rounds. Each form's speed-up over its fp32 sibling is
the median of the per-round ratios (paired: both timed in the same round) with its 95 % interval (the sign
test's, no assumption on the noise); where the interval holds 1.0 the row says *inconclusive* instead of a
number. OpenVINO's float form runs in OpenVINO's default precision (bf16 on AVX-512 BF16 / AMX CPUs), named in
the table: int8 must beat that. It also prints each row's cosine to the float model on held-out inputs and
where int8 went (placement, rewrites, layers kept float).

    python benchmarks/int8_speedup.py                          # all nine, 1 and 2 threads, at users' sizes
    python benchmarks/int8_speedup.py --models torch_mobilenet_v3 --engines onnx --threads 1,2,all --image 160
    python benchmarks/int8_speedup.py --models yolo --readme   # also write its rows into README.md's table

Each model runs at the input size its users run it at (``USER_IMAGE``: a detector at 640x640, classifiers at
224x224; the trained BERT 64 tokens; the random-weight encoder keeps the test zoo's 16 tokens, as at 128 its
per-position decisions were too flimsy to validate, even in OpenVINO's bf16 float form) unless ``--image``
names one: on small inputs the per-call overhead of int8 (quantizing the input, the layout changes around int8
kernels) weighs more than on the sizes people deploy (YOLO on OpenVINO, AMX Xeon: int8 0.69x bf16 at 160x160,
1.08x at 640x640).
``--readme`` replaces the rows it measured in README.md's table for this CPU (one table per CPU measured, the
latest first) and keeps that table's other rows; each row names its input and date.

Raw settings compared (each on the float artifact edgekit made, the same calibration samples):
- LiteRT: ``TFLiteConverter`` full-integer with float I/O (its default for a representative dataset) and int8 I/O
- ONNX Runtime: ``quantize_static`` defaults (S8S8 QDQ, per-tensor, on the plain export), and after
  ``quant_pre_process``: S8S8 QDQ per-channel, U8S8 QDQ per-tensor and per-channel, U8S8 per-channel with
  reduce_range, U8S8 QOperator per-channel
- OpenVINO: ``nncf.quantize`` defaults (its performance preset, or mixed for a transformer) and the other preset

Goals (issue 15): no int8 form slower than fp32; edgekit's default at least as fast as the best raw setting;
ResNet >= 2x on every engine; MobileNetV2 >= 1.5x on LiteRT and OpenVINO, >= 2x on ONNX Runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests" / "models"))

from convert import (  # noqa: E402
    child_failure,
    convert_in_subprocess,
    cpu_name,
    describe_speedup,
    latencies_ms,
    round_medians_ms,
    speedup_interval,
)

#: the input size each architecture's users run it at (the others: 224x224, ImageNet classifiers' size)
USER_IMAGE = {"yolo": 640}
MODELS = ("resnet", "mobilenet_v2", "mobilenet_v3", "efficientnet", "yolo", "encoder", "torch_mobilenet_v3",
          "torch_mobilenet_v3_small", "torch_bert")
#: ``torch_bert``: transformers' BertForSequenceClassification, trained here (3 min) on a task it can learn
#: from its tokens (tests/models/text_classifier.py), so validation judges real decisions: BERT-mini's shape
#: (at the small test model's learning rate, 1e-3, this one never learned: constant logits)
BERT = {"length": 64, "hidden": 256, "layers": 4, "lr": 2e-4}
ENGINES = ("tflite", "onnx", "openvino")
CALIB, HELD_OUT = 64, 16
COSINE_SLACK = 0.01


def _build(name: str, image: int, folder: Path) -> None:
    """Child: the source (Keras, or ``torch_*``: a PyTorch .pt2), its calibration .npz and held-out inputs
    with the float model's outputs."""
    import zoo

    zoo.IMAGE = image
    if name.startswith("torch_"):
        _build_torch(name, image, folder)
        return
    if name == "mobilenet_v2":  # keras.applications, as its users build it
        zoo.BUILDERS[name] = lambda keras: keras.applications.MobileNetV2(
            weights=None, input_tensor=keras.Input((image, image, 3), name="pixels"), classes=10)
    source = zoo.build(name, folder)
    np.savez(folder / "calib.npz", **zoo.inputs_for(name, CALIB, seed=1))
    held_out = zoo.inputs_for(name, HELD_OUT, seed=2)
    np.savez(folder / "held_out.npz", **held_out)
    np.save(folder / "expected.npy", zoo.predict(source, held_out))


def _build_torch(name: str, image: int, folder: Path) -> None:
    import torch
    import torch_zoo

    if name == "torch_bert":
        import text_classifier

        model = text_classifier.train(**BERT)
        calib, held_out = ({"input_ids": text_classifier.samples(count, seed, BERT["length"])[0]}
                           for count, seed in ((CALIB, 1), (HELD_OUT, 2)))
    else:
        torch_zoo.IMAGE = image
        model, _ = torch_zoo.build(name[len("torch_"):])
        calib, held_out = (torch_zoo.inputs_for(name[len("torch_"):], count, seed)
                           for count, seed in ((CALIB, 1), (HELD_OUT, 2)))
    example = {k: torch.from_numpy(v[:1]) for k, v in calib.items()}
    torch.export.save(torch.export.export(model, (), kwargs=example), folder / f"{name}.pt2")
    np.savez(folder / "calib.npz", **calib)
    np.savez(folder / "held_out.npz", **held_out)
    np.save(folder / "expected.npy", torch_zoo.predict(model, held_out))


def source_of(folder: Path) -> Path:
    return folder / f"{folder.name}.pt2" if folder.name.startswith("torch_") else folder / f"{folder.name}.keras"


def _calibration(folder: Path):
    # each data[k] reads the whole array again, and a slice keeps it alive: read each once (at 640x640 the
    # per-sample reads held 64 copies of the 315 MB array, 20 GB, and the kernel killed NNCF)
    with np.load(folder / "calib.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return [{k: array[i:i + 1] for k, array in arrays.items()} for i in range(CALIB)]


def _raw_tflite(folder: Path) -> dict[str, Path]:
    import tensorflow as tf
    import zoo

    model = zoo._keras().models.load_model(folder / f"{folder.name}.keras", compile=False)
    samples = _calibration(folder)
    made = {}
    for label, io_type in (("TFLiteConverter int8, float I/O", None), ("TFLiteConverter int8, int8 I/O", tf.int8)):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([s[i.name] for i in model.inputs] for s in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_type is not None:
            converter.inference_input_type = converter.inference_output_type = io_type
        path = folder / f"raw-{len(made)}.tflite"
        path.write_bytes(converter.convert())
        made[label] = path
    return made


class _Reader:
    def __init__(self, samples):
        self.samples = iter(samples)

    def get_next(self):
        return next(self.samples, None)


def _raw_onnx(folder: Path) -> dict[str, Path]:
    """ORT's quantizer on the plain export (what tf2onnx writes; edgekit's onnx-fp32 is ORT-optimized, with
    fused ops the quantizer does not know)."""
    from edgekit.converters._onnx_export import export_onnx
    from edgekit.converters._source import open_source
    from onnxruntime import quantization as q

    folder = folder.resolve()
    float_model = folder / "raw-export.onnx"
    export_onnx(open_source(source_of(folder)), float_model)
    prepared = folder / "raw-prepared.onnx"
    cwd = os.getcwd()
    os.chdir(folder)  # a failed symbolic shape inference dumps its model into the current directory
    try:
        q.quant_pre_process(str(float_model), str(prepared))
    except Exception:  # noqa: BLE001 - symbolic shape inference asserts on attention masks; ORT's own fallback
        q.quant_pre_process(str(float_model), str(prepared), skip_symbolic_shape=True)
    finally:
        os.chdir(cwd)
    u8 = {"activation_type": q.QuantType.QUInt8}
    settings = {  # ORT 1.2x+ defaults: S8S8 (int8 activations and weights), QDQ, per-tensor
        "quantize_static defaults (S8S8 QDQ, per-tensor)": (float_model, {}),
        "S8S8 QDQ per-channel": (prepared, {"per_channel": True}),
        "U8S8 QDQ per-tensor": (prepared, u8),
        "U8S8 QDQ per-channel": (prepared, {**u8, "per_channel": True}),
        "U8S8 QDQ per-channel reduce_range": (prepared, {**u8, "per_channel": True, "reduce_range": True}),
        "U8S8 QOperator per-channel": (prepared, {**u8, "quant_format": q.QuantFormat.QOperator, "per_channel": True}),
    }
    made = {}
    for label, (model, options) in settings.items():
        path = folder / f"raw-{len(made)}.onnx"
        try:
            q.quantize_static(str(model), str(path), _Reader(_calibration(folder)), **options)
            made[label] = path
        except Exception as exc:  # noqa: BLE001 - a raw setting that does not apply to this model is a row, not a crash
            print(f"  {label}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}", file=sys.stderr)
    return made


def _raw_openvino(folder: Path, float_model: Path) -> dict[str, Path]:
    import nncf
    import openvino as ov
    from edgekit.converters._openvino import attention_matmuls

    core = ov.Core()
    made = {}
    # NNCF's docs ask for model_type TRANSFORMER on attention models: found as edgekit's --model-type auto finds it
    transformer = attention_matmuls(core.read_model(float_model)) > 0
    # NNCF's default preset is performance, but mixed for model_type TRANSFORMER: name what each row ran
    settings = ((("nncf.quantize defaults (mixed, for a transformer)", None),
                 ("nncf.quantize performance preset", nncf.QuantizationPreset.PERFORMANCE)) if transformer else
                (("nncf.quantize defaults (performance)", None),
                 ("nncf.quantize mixed preset", nncf.QuantizationPreset.MIXED)))
    for label, preset in settings:
        model = core.read_model(float_model)
        dataset = nncf.Dataset(_calibration(folder), lambda sample: list(sample.values()))  # inputs in order
        options = {"preset": preset} if preset else {}
        if transformer:
            options["model_type"] = nncf.ModelType.TRANSFORMER
        quantized = nncf.quantize(model, dataset, subset_size=CALIB, **options)
        path = folder / f"raw-{len(made)}.xml"
        ov.save_model(quantized, path)
        made[label] = path
    return made


def _child(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    if args.child == "build":
        _build(args.model, int(args.image), folder)
        return
    if args.child == "conv":
        _conv_child(folder)
        return
    float_model = Path(args.float_model) if args.float_model else None
    made = {"tflite": lambda: _raw_tflite(folder), "onnx": lambda: _raw_onnx(folder),
            "openvino": lambda: _raw_openvino(folder, float_model)}[args.child]()
    print(json.dumps({label: str(path) for label, path in made.items()}))


def _run_child(*options: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, __file__, *options], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(child_failure(done))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]  # the engines print too
    return json.loads(lines[-1]) if lines else {}


def cosine_to_float(path: Path, folder: Path) -> float:
    """Worst cosine between the artifact's and the Keras model's outputs over the held-out inputs."""
    import edgekit

    held_out, expected = dict(np.load(folder / "held_out.npz")), np.load(folder / "expected.npy")
    worst = 1.0
    with edgekit.load(path) as rt:
        for i in range(len(expected)):
            got = np.asarray(next(iter(rt.run({k: held_out[k][i:i + 1] for k in held_out}).values())),
                             dtype=np.float64).ravel()
            want = expected[i].astype(np.float64).ravel()
            worst = min(worst, float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want) + 1e-30)))
    return worst


def image_size(name: str, asked: str) -> int:
    return USER_IMAGE.get(name, 224) if asked == "users" else int(asked)


def describe_input(samples: Path) -> str:
    """What one inference takes: ``640x640x3`` (Keras, NHWC), ``3x224x224`` (PyTorch), ``32 tokens``."""
    with np.load(samples) as data:
        shapes = {data[k].shape[1:] for k in data.files}
    if len(shapes) == 1 and len(next(iter(shapes))) == 1:  # token ids and their mask
        return f"{next(iter(shapes))[0]} tokens"
    return ", ".join("x".join(map(str, shape)) for shape in shapes)


def bench_model(name: str, args: argparse.Namespace, work: Path) -> list[dict]:
    folder = work / name
    folder.mkdir()
    _run_child("--child", "build", "--model", name, "--image", str(image_size(name, args.image)),
               "--folder", str(folder))
    source, calib = source_of(folder), str(folder / "calib.npz")
    model_input = describe_input(folder / "held_out.npz")  # the 16 held-out samples: the calibration 64 read 4x more
    rows: list[dict] = []
    placements: dict[str, str] = {}
    for engine in args.engines:
        made = {}
        for kind in ("fp32", "int8"):
            # edgekit's defaults, repair included: a default int8 that collapses is repaired as a user's would
            # be, and the placement column names the remedy (YOLO at 640x640 on LiteRT and ONNX Runtime: its
            # 0-1 scores share one int8 scale with 0-640 pixel boxes). The raw forms stand unrepaired, with
            # their cosines beside them.
            row = convert_in_subprocess(source, f"{engine}-{kind}", calib, folder / "edgekit", CALIB, HELD_OUT)
            if "error" in row:
                print(f"  {engine}-{kind}: edgekit failed: {row['error']}")
                rows += [{"model": name, "input": model_input, "engine": engine, "form": f"edgekit {kind}",
                          "threads": threads, "error": row["error"]} for threads in args.threads]
                continue
            made[f"edgekit {kind}"] = Path(row["artifact"])
            placements[f"edgekit {kind}"] = row.get("placement", "")
        if "edgekit fp32" not in made:
            continue
        raw_failure = None  # why the raw column is empty, its first words in the README table
        if engine == "tflite" and name.startswith("torch_"):
            raw_failure = "none for a PyTorch source (edgekit's route: litert-torch, then ai-edge-quantizer)"
            print(f"  {engine}: raw quantizer: {raw_failure}")
        else:
            try:
                raw = _run_child("--child", engine, "--folder", str(folder), "--float-model",
                                 str(made["edgekit fp32"]))
                made.update({label: Path(path) for label, path in raw.items()})
            except RuntimeError as exc:
                raw_failure = f"failed: {exc}"
                print(f"  {engine}: raw quantizer {raw_failure}")
        cosines = {label: cosine_to_float(path, folder) for label, path in made.items()}
        for threads in args.threads:
            rounds, precisions = round_medians_ms(made, threads, args.rounds, args.calls)
            for label, path in made.items():
                size = sum(f.stat().st_size for f in (path, path.with_suffix(".bin")) if f.is_file())  # IR: xml+bin
                median, low, high = speedup_interval(rounds["edgekit fp32"], rounds[label])
                rows.append({"model": name, "input": model_input, "engine": engine, "form": label,
                             "threads": threads, "size_kb": size / 1024, "p50_ms": statistics.median(rounds[label]),
                             "speedup": median, "speedup_low": low, "speedup_high": high, "cosine": cosines[label],
                             "float_precision": precisions["edgekit fp32"],
                             "placement": placements.get(label, ""), "raw_failure": raw_failure})
    return rows


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimddp", "i8mm")
    return " ".join(f for f in flags.split() if f in wanted) or "none of the int8/bf16 extensions"


def print_table(rows: list[dict]) -> None:
    rows = [r for r in rows if "error" not in r]  # failed conversions were printed as they happened
    print(f"\n{'model':<20}{'engine':<9}{'form':<50}{'thr':>4}{'size KB':>9}{'p50 ms':>9}  {'vs fp32 [95 %]':<28}"
          f"{'cosine':>8}")
    for row in rows:
        print(f"{row['model']:<20}{row['engine']:<9}{row['form']:<50}{row['threads']:>4}{row['size_kb']:>9.0f}"
              f"{row['p50_ms']:>9.3f}  {_speedup(row):<28}{row['cosine']:>8.4f}")
    print(f"\nedgekit int8 against the fastest raw int8 setting whose cosine is within {COSINE_SLACK} of edgekit's "
          "(a faster raw form that lost accuracy is named beside it):")
    for ours, best, fastest in _summary(rows):
        line = (f"  {ours['model']:<20}{ours['engine']:<9}{ours['threads']:>2} thr: int8 {_speedup(ours)} fp32"
                f" ({'SLOWER THAN FP32' if ours['speedup_high'] < 1 else 'ok' if ours['speedup_low'] >= 1 else 'tie'})")
        if best:
            line += f"; best raw {best['form']} {_speedup(best)} -> edgekit/raw {best['p50_ms'] / ours['p50_ms']:.2f}"
        if fastest:
            line += f"; (faster but cosine {fastest['cosine']:.3f}: {fastest['form']} {fastest['speedup']:.2f}x)"
        print(line)


def _speedup(row: dict) -> str:
    return describe_speedup(row["speedup"], row["speedup_low"], row["speedup_high"])


def _summary(rows: list[dict]) -> list[tuple[dict, dict | None, dict | None]]:
    """Per model, engine and thread count: edgekit's int8 row, the fastest raw int8 row within COSINE_SLACK
    of its cosine, and a faster raw row that lost accuracy (or None)."""
    found = []
    rows = [r for r in rows if "error" not in r]
    for key in dict.fromkeys((r["model"], r["engine"], r["threads"]) for r in rows):
        ours = next((r for r in rows if (r["model"], r["engine"], r["threads"]) == key
                     and r["form"] == "edgekit int8"), None)
        if not ours:
            continue
        raw = _raw_forms(rows, key)
        fair = [r for r in raw if r["cosine"] >= ours["cosine"] - COSINE_SLACK]
        best = min(fair, key=lambda r: r["p50_ms"]) if fair else None
        fastest = min(raw, key=lambda r: r["p50_ms"]) if raw else None
        found.append((ours, best, fastest if fastest is not None and fastest not in fair else None))
    return found


def _raw_forms(rows: list[dict], key: tuple) -> list[dict]:
    """The engine's own quantizers' measured rows for one (model, engine, threads)."""
    return [r for r in rows if (r["model"], r["engine"], r["threads"]) == key and "error" not in r
            and not r["form"].startswith("edgekit")]


README_MARKERS = ("<!-- int8-speedup -->", "<!-- /int8-speedup -->")
CPU_LINE = "Measured on "  # opens each CPU's table


TABLE_HEADER = ["| model | input | engine | threads | edgekit int8 vs float | float ran in | engine's own quantizer, "
                "best setting | cosine to float | placement | measured |", "|---|---|---|---|---|---|---|---|---|---|"]


def _whole_clauses(text: str, limit: int = 400) -> str:
    """``text``'s leading "; "-separated clauses that fit in ``limit`` characters (a cell cut mid-word misleads)."""
    clauses = text.split("; ")
    kept = [clauses[0]]
    for clause in clauses[1:]:
        if len("; ".join([*kept, clause])) > limit:
            return "; ".join(kept) + "; …"
        kept.append(clause)
    return "; ".join(kept)


def write_readme(rows: list[dict], args: argparse.Namespace, readme: Path) -> None:
    """Put the summary rows between README.md's int8-speedup markers, in this CPU's table: one table per CPU
    measured (the latest first), so a run on another machine adds its table beside the others. Rows of this
    CPU's table that this run did not measure (other models, engines or thread counts) stay."""
    machine = f"**{cpu_name()}** ({os.cpu_count()} cores; {cpu_flags()})"
    today = time.strftime("%Y-%m-%d")
    fresh = {}
    for ours, best, _ in _summary(rows):
        raw = f"{best['form']}: {_speedup(best)}" if best else (
            ours["raw_failure"].split(" (")[0] if ours.get("raw_failure") else "—")
        fresh[(ours["model"], ours["engine"], str(ours["threads"]))] = (
            f"| {ours['model']} | {ours['input']} | {ours['engine']} | {ours['threads']} | {_speedup(ours)} | "
            f"{ours['float_precision']} | {raw} | {ours['cosine']:.4f} | {ours['placement'] or '—'} | "
            f"{today}, {args.rounds} rounds |")
    for failed in (r for r in rows if "error" in r):  # edgekit's fp32 or int8 form failed: no speed to show
        key = (failed["model"], failed["engine"], failed["threads"])
        raw = _raw_forms(rows, key)
        fastest = min(raw, key=lambda r: r["p50_ms"]) if raw else None
        beside = f"{fastest['form']}: {_speedup(fastest)} (cosine {fastest['cosine']:.4f})" if fastest else ""
        fresh[tuple(map(str, key))] = (
            f"| {failed['model']} | {failed['input']} | {failed['engine']} | {failed['threads']} | "
            f"{failed['form']}: {_whole_clauses(failed['error'])} | | {beside} | | | {today} |")
    text = readme.read_text()
    start, end = text.index(README_MARKERS[0]) + len(README_MARKERS[0]), text.index(README_MARKERS[1])
    tables = _tables_per_cpu(text[start:end])
    table = {**tables.pop(machine, {}), **fresh}
    order = {name: i for i, name in enumerate(MODELS)}

    def lines_of(rows_by_key: dict[tuple[str, str, str], str]) -> list[str]:
        keys = sorted(rows_by_key, key=lambda k: (order.get(k[0], len(order)), k[0], ENGINES.index(k[1])
                                                  if k[1] in ENGINES else len(ENGINES), int(k[2])))
        return [*TABLE_HEADER, *(rows_by_key[k] for k in keys)]

    lines = ["Each architecture at the input size its users run it at, the rows' dates and rounds in the last "
             "column (`python benchmarks/int8_speedup.py --threads 1,2 --readme`; a run of some models or engines "
             "replaces their rows only, in its CPU's table). Speed-up of int8 over the same engine's float form "
             "in the precision it ran (OpenVINO's default: bf16 where the CPU has it), the median per-round "
             "ratio and its 95 % interval; *inconclusive* where the interval holds 1.0."]
    for cpu, rows_by_key in {machine: table, **tables}.items():
        if not rows_by_key:
            continue
        lines += ["", f"{CPU_LINE}{cpu}:", "", *lines_of(rows_by_key)]
    readme.write_text(text[:start] + "\n" + "\n".join(lines) + "\n" + text[end:])


def _tables_per_cpu(section: str) -> dict[str, dict[tuple[str, str, str], str]]:
    """README's int8 tables by the CPU they were measured on (its bold name, cores and flags), each as
    (model, engine, threads) -> row."""
    tables: dict[str, dict[tuple[str, str, str], str]] = {}
    rows = None
    for line in section.splitlines():
        if line.startswith(CPU_LINE + "**"):
            cpu = line[len(CPU_LINE):line.index(")", line.index("** (")) + 1]
            rows = tables.setdefault(cpu, {})
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if rows is not None and line.startswith("| ") and len(cells) == len(TABLE_HEADER[1].split("|")) - 2 \
                and cells[0] != "model":
            rows[(cells[0], cells[2], cells[3])] = line
    return tables


def _conv_child(folder: Path) -> None:
    """Child: one 3x3 convolution, 64 -> 64 channels on 56x56 (ResNet's first stage), as fp32 and int8 files."""
    import tensorflow as tf
    import zoo

    keras = zoo._keras()
    model = keras.Sequential([keras.Input((56, 56, 64), name="x"), keras.layers.Conv2D(64, 3, padding="same")])
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((1, 56, 56, 64), dtype=np.float32) for _ in range(8)]
    for name, quantize in (("conv_fp32.tflite", False), ("conv_int8.tflite", True)):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([s] for s in samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        (folder / name).write_bytes(converter.convert())
    model.export(folder / "conv_saved", verbose=False)


def kernel_check(args: argparse.Namespace, work: Path) -> None:
    """int8 against fp32 on one convolution, per engine: what the CPU's int8 instructions give before any
    model-level choice (Q/DQ placement, fused activations, float-only ops) enters."""
    folder = work / "conv"
    folder.mkdir()
    _run_child("--child", "conv", "--folder", str(folder))
    made = {"litert fp32": folder / "conv_fp32.tflite", "litert int8": folder / "conv_int8.tflite"}
    for engine in ("onnx", "openvino"):
        for kind in ("fp32", "int8"):
            row = convert_in_subprocess(folder / "conv_saved", f"{engine}-{kind}", "random", folder / "out", 16, 4,
                                        repair=False)
            if "error" not in row:
                made[f"{'onnxruntime' if engine == 'onnx' else engine} {kind}"] = Path(row["artifact"])
    latency = latencies_ms(made, args.threads[0], args.rounds, args.calls * 5)
    print("one 3x3 conv 64->64 on 56x56, int8 vs fp32 per engine: "
          + ", ".join(f"{e} {latency[e + ' fp32'] / latency[e + ' int8']:.2f}x"
                      for e in ("litert", "onnxruntime", "openvino") if f"{e} int8" in latency))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--image", default="users",
                        help="image side, e.g. 160; 'users' (default): each model's USER_IMAGE, else 224")
    parser.add_argument("--threads", default="1,2", help="thread counts to time, e.g. 1,2,4 ('all': every core)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--readme", action="store_true", help="write the summary table into README.md")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--float-model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    args.engines = args.engines.split(",")
    args.threads = [os.cpu_count() if t == "all" else int(t) for t in args.threads.split(",")]
    sizes = "each model at its users' size" if args.image == "users" else f"images {args.image}x{args.image}"
    print(f"CPU: {cpu_name()}; flags: {cpu_flags()}; threads {args.threads}; {sizes}")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        kernel_check(args, Path(work))
        for name in args.models.split(","):
            print(f"\n# {name}", flush=True)
            rows += bench_model(name, args, Path(work))
            print_table([r for r in rows if r["model"] == name])
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.readme:
        write_readme(rows, args, ROOT.parent / "README.md")


if __name__ == "__main__":
    main()
