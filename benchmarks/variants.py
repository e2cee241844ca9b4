"""The benchmarked variants: each builds (if needed) and loads one way of running the same encoder.

Every variant turns the same int64 feeds (input_ids, attention_mask, token_type_ids) into the encoder's
last hidden state, so timings compare model execution alone (tokenization is the same for all).

Peers run with their own recommended settings and the same thread count:
PyTorch fp32 and bf16 weights (eager attention, torch.inference_mode), Optimum's INT8 export
(ORTQuantizer, AutoQuantizationConfig.avx512_vnni, dynamic, per channel) run by ONNX Runtime with default
session options, OpenVINO INT8 through NNCF post-training quantization (ModelType.TRANSFORMER).
Ours run through mbert_edge's own backend on the bundle's model file, batched as ``Predictor.embed`` batches
(length-sorted, at most ``DEFAULT_MAX_TOKENS`` padded tokens per model call): fp32, dynamic INT8 (the
default: activation ranges fixed at export, batch-invariant, outlier channels in float32; the same with every channel
in INT8; and ONNX Runtime's own per-batch ranges) and static
INT8 for ONNX Runtime (the default backend), and static INT8 made for OpenVINO (``--target openvino``: NNCF's
recipe in the bundle, run by ``backend="openvino"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import peer_files

Feeds = dict[str, np.ndarray]
Runner = Callable[[Feeds], np.ndarray]

PEERS = ("pytorch-fp32", "pytorch-bf16", "optimum-int8", "openvino-int8")
OURS = (
    "ours-fp32",
    "ours-int8-dynamic",
    "ours-int8-dynamic-outliers-int8",
    "ours-int8-dynamic-per-batch",
    "ours-int8-static",
    "ours-int8-openvino",
)
ALL = PEERS + OURS


def _torch_runner(ckpt: Path, threads: int, bf16: bool) -> Runner:
    import torch
    import transformers

    torch.set_num_threads(threads)
    model = transformers.AutoModel.from_pretrained(str(ckpt), attn_implementation="eager").eval()
    if bf16:
        model = model.to(torch.bfloat16)

    def run(feeds: Feeds) -> np.ndarray:
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state
        return out.float().numpy()

    return run


def optimum_int8_path(ckpt: Path, work: Path) -> Path:
    """Optimum's recipe (:func:`peer_files.optimum_int8`), built once into ``work/optimum-int8``."""
    model_file = work / "optimum-int8" / "model_quantized.onnx"
    return model_file if model_file.exists() else peer_files.optimum_int8(ckpt, model_file.parent)


def ort_runner(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Threads stop spinning when a call returns (as in our backend), so they do not steal the cores from the
    # variant timed next in the same process; spinning within a call, ONNX Runtime's default, stays on.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(feeds: Feeds) -> np.ndarray:
        return session.run(None, {k: feeds[k] for k in names})[0]

    return run


def openvino_int8_path(onnx_model: Path, work: Path, calibration: Sequence[Feeds]) -> Path:
    """OpenVINO's recipe (:func:`peer_files.nncf_int8`) on ``calibration``, built once into
    ``work/openvino-int8``."""
    out = work / "openvino-int8" / "model.xml"
    return out if out.exists() else peer_files.nncf_int8(onnx_model, out.parent, calibration)


def openvino_runner(path: Path, threads: int) -> Runner:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    names = [i.get_any_name() for i in compiled.inputs]

    def run(feeds: Feeds) -> np.ndarray:
        result = request.infer({k: feeds[k] for k in names if k in feeds})
        return np.asarray(result[compiled.outputs[0]])

    return run


def _ours_runner(bundle: Path, threads: int, backend: str = "auto") -> Runner:
    """The runtime's own path minus tokenization: the predictor's batching policy (at most
    ``DEFAULT_MAX_TOKENS`` padded tokens per model call) over the bundle's backend."""
    import mbert_edge
    from mbert_edge.batching import length_sorted_batches
    from mbert_edge.predictor import DEFAULT_MAX_TOKENS

    predictor = mbert_edge.load(bundle, backend=backend, threads=threads)
    model = predictor.backend

    def run(feeds: Feeds) -> np.ndarray:
        mask = feeds["attention_mask"]
        lengths = [int(n) for n in mask.sum(axis=1)]
        out = np.zeros((*mask.shape, predictor.embedding_dim), dtype=np.float32)
        for idx in length_sorted_batches(lengths, len(lengths), DEFAULT_MAX_TOKENS):
            n = max(lengths[i] for i in idx)
            out[idx, :n] = next(iter(model.run({k: v[idx, :n] for k, v in feeds.items()}).values()))
        return out

    return run


def artifact(name: str, model_dir: Path, calibration: Sequence[Feeds]) -> Path:
    """The file or directory a variant loads (built first when needed)."""
    ckpt = Path((model_dir / "checkpoint.txt").read_text().strip())
    if name.startswith("pytorch"):
        return ckpt
    if name == "optimum-int8":
        return optimum_int8_path(ckpt, model_dir)
    if name == "openvino-int8":
        return openvino_int8_path(model_dir / "bundle-fp32" / "model.onnx", model_dir, calibration)
    return model_dir / f"bundle-{name.removeprefix('ours-')}"


def size_bytes(name: str, path: Path) -> int:
    """Bytes on disk of what the variant needs to run (weights / model files, not tokenizers)."""
    if name.startswith("pytorch"):
        return sum(p.stat().st_size for p in path.glob("*.safetensors"))
    if name == "openvino-int8":
        return path.stat().st_size + path.with_suffix(".bin").stat().st_size
    if name.startswith("ours"):
        import json

        manifest = json.loads((path / "manifest.json").read_text())
        return sum(f["size"] for f in manifest["files"] if f["role"] in ("model", "weights"))
    return path.stat().st_size


def load(name: str, path: Path, threads: int) -> Runner:
    """A runner for variant ``name`` from its artifact."""
    if name == "pytorch-fp32":
        return _torch_runner(path, threads, bf16=False)
    if name == "pytorch-bf16":
        return _torch_runner(path, threads, bf16=True)
    if name == "optimum-int8":
        return ort_runner(path, threads)
    if name == "openvino-int8":
        return openvino_runner(path, threads)
    return _ours_runner(path, threads, backend="openvino" if name.endswith("-openvino") else "auto")
