"""INT8 model files against their fp32 file: per-language fidelity on parallel sentences, and speed side by side.

For each INT8 file (the bundle's own, or that of another bundle exported from the same source with the same
tokenizer, e.g. with ``--outlier-channels int8``), on the parallel sentences of
``export/data/parallel_eval.tsv`` (evaluation only: never trained, mined or calibrated on):

* the mean cosine of its sentence embeddings to the fp32 file's, per language;
* cross-lingual retrieval per language (does a sentence find its translation among the English ones, and
  back; accuracy@1, the mean of both directions), next to the fp32 file's own;
* latency at b1 x s16 and b1 x s128 and throughput at b32 x s128, every file in alternating rounds in one
  process, through the runtime's own ONNX Runtime backend (its session settings), ``--threads`` threads.

    .venv/bin/python benchmarks/int8_files.py BUNDLE --file split=model.int8.onnx \\
        --file all-int8=../other-bundle/model.int8.onnx --out benchmarks/results/NAME

``BUNDLE`` must hold the fp32 file (export with ``--keep-fp32``). Writes ``NAME.md`` and ``NAME.json``.

``--unsigned-weights`` adds, for every file, ``NAME-u8u8``: the same integers with the weights stored as uint8
(``w + 128``, zero points too), which ONNX Runtime multiplies with its U8U8 kernels. Those never saturate, so on
a CPU without VNNI (where the u8 x s8 kernels do: ``mbert_edge/backends/int8_kernels.py``) the variant shows
what the file computes on a VNNI CPU, and what saturation costs here. It covers ONNX Runtime's integer ops
(dynamic files) and QDQ files (static, and NNCF's for OpenVINO: the constant input of each DequantizeLinear).
OpenVINO computes uint8 weights exactly too, but not with its int8 kernels (the variant's speed there means
nothing); ``--backend openvino`` runs every INT8 file in OpenVINO's CPU plugin instead of ONNX Runtime (the
fp32 reference stays ONNX Runtime's).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # machine and version facts, shared with the main benchmark

from mbert_edge.backends import int8_kernels
from mbert_edge_export.distill.data import parallel_set
from mbert_edge_export.distill.evaluate import PIVOT, retrieval

SHAPES = ((1, 16), (1, 128), (32, 128))
#: op type -> positions of (weight, weight zero point) among its inputs (ONNX Runtime's integer ops)
WEIGHT_INPUTS = {"MatMulInteger": (1, 3), "MatMulIntegerToFloat": (1, 5), "QAttention": (1, 7)}
#: QDQ: a DequantizeLinear's (input, zero point); only constant inputs are weights (activations are computed)
QDQ_WEIGHT_INPUTS = {"DequantizeLinear": (0, 2)}


def unsigned_weights_file(src: Path, dst: Path) -> int:
    """Write ``src`` to ``dst`` (one self-contained file) with the int8 weights and weight zero points of its
    integer ops stored as uint8 + 128: the same values, multiplied by ONNX Runtime's U8U8 kernels. Returns how
    many tensors changed."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {t.name: t for t in model.graph.initializer}
    changed = set()
    for node in model.graph.node:
        qdq = node.op_type in QDQ_WEIGHT_INPUTS
        if qdq and node.input[0] not in inits:
            continue  # an activation's DequantizeLinear: its integers come from a QuantizeLinear at run time
        for at in (QDQ_WEIGHT_INPUTS if qdq else WEIGHT_INPUTS).get(node.op_type, ()):
            name = node.input[at] if at < len(node.input) else ""
            if not name or name in changed:
                continue
            if name not in inits:
                raise SystemExit(f"{src}: {node.op_type} {node.name} has no constant input {at}")
            values = numpy_helper.to_array(inits[name])
            if values.dtype != np.int8:
                continue
            inits[name].CopyFrom(numpy_helper.from_array((values.astype(np.int16) + 128).astype(np.uint8), name))
            changed.add(name)
    onnx.save(model, str(dst))
    return len(changed)


def embeddings(predictor, backend, sentences: dict[str, dict[str, str]]) -> dict[str, dict[str, np.ndarray]]:
    """Every sentence embedded by ``predictor`` with its backend swapped for ``backend``."""
    predictor.backend = backend
    return {
        lang: dict(zip(sorted(by_id), predictor.embed([by_id[i] for i in sorted(by_id)]), strict=True))
        for lang, by_id in sentences.items()
    }


def fidelity(
    reference: dict[str, dict[str, np.ndarray]], got: dict[str, dict[str, np.ndarray]]
) -> dict[str, dict[str, float]]:
    """Per language: mean cosine of ``got`` to ``reference``, and both files' retrieval against English."""
    out = {}
    for lang in sorted(got):
        row = {"cosine_to_fp32": float(np.mean([got[lang][i] @ reference[lang][i] for i in got[lang]]))}
        if lang != PIVOT and PIVOT in got:
            ids = sorted(set(got[lang]) & set(got[PIVOT]))
            for key, vecs in (("retrieval", got), ("retrieval_fp32", reference)):
                row[key] = retrieval(np.stack([vecs[lang][i] for i in ids]), np.stack([vecs[PIVOT][i] for i in ids]))
            row["sentences"] = len(ids)
        out[lang] = row
    return out


def timings(backends: dict, rounds: int, pieces: np.ndarray) -> dict[str, dict[str, float]]:
    """Median ms per call of each backend at each shape, in alternating rounds (the order flips each round);
    the token ids are drawn from ``pieces``."""
    rng = np.random.default_rng(0)
    samples: dict[str, dict[str, list[float]]] = {n: {f"b{b}xs{s}": [] for b, s in SHAPES} for n in backends}
    names = list(backends)
    for r in range(rounds):
        for b, s in SHAPES:
            ids = rng.choice(pieces, size=(b, s)).astype(np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            calls = 40 if b == 1 else 3
            for name in names if r % 2 == 0 else names[::-1]:
                backend = backends[name]
                inputs = {k: v for k, v in feeds.items() if k in backend.input_names}
                backend.run(inputs)
                start = time.perf_counter()
                for _ in range(calls):
                    backend.run(inputs)
                samples[name][f"b{b}xs{s}"].append((time.perf_counter() - start) / calls * 1000)
    return {n: {shape: float(np.median(v)) for shape, v in by.items()} for n, by in samples.items()}


def markdown(result: dict) -> str:
    names = list(result["files"])
    first = names[0]
    lines = [
        "# INT8 files against their fp32 file: fidelity per language and speed",
        "",
        f"Machine: {result['machine'].get('cpu', '?')}, {result['machine']['cores']} cores, {result['threads']} "
        f"threads. Versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}.",
        f"Started {result['started']}. Bundle: `{result['bundle']}`.",
        f"INT8 files run in {int8_kernels.RUNTIME_NAMES[result.get('backend', 'onnxruntime')]}; its integer kernels "
        f"on this CPU: {int8_kernels.describe(result.get('u8s8_saturates'))}.",
        "",
        f"Command: `{result['command']}`",
        "",
        "Parallel sentences of `export/data/parallel_eval.tsv` (never trained, mined or calibrated on). Cosine: "
        "mean cosine of each file's sentence embedding to the fp32 file's. Retrieval: accuracy@1 of a sentence "
        "finding its translation among the English ones and back (mean of both directions), fp32 file in brackets.",
        "",
        "| language | " + " | ".join(f"{n}: cosine | {n}: retrieval (fp32)" for n in names) + " |",
        "|---|" + "---|---|" * len(names),
    ]
    for lang in result["files"][first]["fidelity"]:
        cells = []
        for n in names:
            row = result["files"][n]["fidelity"][lang]
            cells.append(f"{row['cosine_to_fp32']:.5f}")
            cells.append(f"{row['retrieval']:.3f} ({row['retrieval_fp32']:.3f})" if "retrieval" in row else "-")
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Speed (median of {result['rounds']} alternating rounds; ratio: the first file's time / this file's, "
        "above 1 is faster):",
        "",
        "| file | path | " + " | ".join(f"b{b} x s{s} ms" for b, s in SHAPES) + " |",
        "|---|---|" + "---|" * len(SHAPES),
    ]
    for n in names:
        t = result["files"][n]["ms"]
        cells = [
            f"{t[f'b{b}xs{s}']:.2f} (x{result['files'][first]['ms'][f'b{b}xs{s}'] / t[f'b{b}xs{s}']:.3f})"
            for b, s in SHAPES
        ]
        lines.append(f"| {n} | `{result['files'][n]['path']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, help="a bundle with its fp32 file (exported with --keep-fp32)")
    ap.add_argument("--file", action="append", required=True, metavar="NAME=PATH", help="an INT8 model file")
    ap.add_argument("--out", type=Path, required=True, help="results prefix: writes PREFIX.md and PREFIX.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument(
        "--unsigned-weights", action="store_true", help="also each file with uint8 weights (U8U8 kernels, exact)"
    )
    ap.add_argument(
        "--backend",
        choices=("onnxruntime", "openvino"),
        default="onnxruntime",
        help="the runtime of the INT8 files (openvino: QDQ files, e.g. NNCF's); the fp32 file runs in ONNX Runtime",
    )
    args = ap.parse_args(argv)

    import mbert_edge

    predictor = mbert_edge.load(args.bundle, precision="fp32", threads=args.threads)
    reference_cls = type(predictor.backend)
    if args.backend == "openvino":
        from mbert_edge.backends.openvino import OpenVINOCPUBackend

        def backend_cls(path: Path, threads: int, precision: str):
            return OpenVINOCPUBackend(path, threads=threads, precision=precision, cache_dir=None)
    else:
        backend_cls = reference_cls
    files = {}
    for spec in args.file:
        name, _, path = spec.partition("=")
        files[name] = path if Path(path).is_absolute() else str(args.bundle / path)
    shown = dict(files)  # what the results call each file
    tmp = tempfile.TemporaryDirectory(prefix="int8-files-")
    if args.unsigned_weights:
        for name, path in list(files.items()):
            files[f"{name}-u8u8"] = str(Path(tmp.name) / f"{name}-u8u8.onnx")
            shown[f"{name}-u8u8"] = f"{path} (weights as uint8)"
            unsigned_weights_file(Path(path), Path(files[f"{name}-u8u8"]))
    backends = {n: backend_cls(Path(p), threads=args.threads, precision="int8") for n, p in files.items()}
    sentences = parallel_set()
    reference = embeddings(predictor, reference_cls(args.bundle / "model.onnx", threads=args.threads), sentences)
    result = {
        "machine": run.machine(),
        "versions": run.versions(),
        "threads": args.threads,
        "rounds": args.rounds,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "bundle": str(args.bundle),
        "backend": args.backend,
        "u8s8_saturates": int8_kernels.saturates_for(args.backend),
        "command": "benchmarks/int8_files.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "files": {
            n: {"path": shown[n], "fidelity": fidelity(reference, embeddings(predictor, b, sentences))}
            for n, b in backends.items()
        },
    }
    pieces = np.unique([i for e in predictor.tokenizer.encode(list(sentences[PIVOT].values())) for i in e.ids])
    for name, ms in timings(backends, args.rounds, pieces).items():
        result["files"][name]["ms"] = ms
    run.write_results(args.out, result, markdown(result))
    tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
