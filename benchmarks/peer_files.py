"""The peers' INT8 files of a teacher, for ``benchmarks/students.py`` (``--onnx-peer``, ``--openvino-peer``).

Each peer's own recipe, as its documentation gives it:

* **Optimum** (``optimum``): ``ORTModelFor<Task>.from_pretrained(checkpoint, export=True)``, then
  ``ORTQuantizer`` with ``AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)`` (dynamic
  INT8, per-channel weights): ``OUT/model_quantized.onnx``. Needs the benchmark venv (``.venv-bench``), where
  optimum is installed.
* **OpenVINO + NNCF** (``openvino``): ``ov.convert_model`` of the bundle's plain fp32 ONNX graph (dynamic
  axes), then ``nncf.quantize(..., model_type=ModelType.TRANSFORMER)`` calibrated on
  :data:`CALIBRATION_TEXTS` corpus sentences from the *training* paragraphs only (the students benchmark
  scores held-out paragraphs), tokenized with the bundle's tokenizer and prefix: ``OUT/model.xml``.

    .venv-bench/bin/python benchmarks/peer_files.py optimum build/topic-teacher build/topic-optimum-int8
    .venv/bin/python benchmarks/peer_files.py openvino build/b/topic-fp32 build/topic-openvino-int8

``benchmarks/variants.py`` builds its two peers with the same functions (:func:`optimum_int8`,
:func:`nncf_int8`), calibrating OpenVINO on sentences of both splits: that table scores speed only.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("peer_files")

CALIBRATION_TEXTS = 64
CALIBRATION_SEED = 7
CALIBRATION_BATCH = 16
MAX_TOKENS = 128


def optimum_int8(checkpoint: Path, out: Path) -> Path:
    """Optimum's dynamic INT8 (AVX-512 VNNI, per channel) of ``checkpoint``: ``out/model_quantized.onnx``."""
    from optimum.onnxruntime import (
        ORTModelForFeatureExtraction,
        ORTModelForSequenceClassification,
        ORTModelForTokenClassification,
        ORTQuantizer,
    )
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    config = json.loads((checkpoint / "config.json").read_text())
    arch = " ".join(config.get("architectures") or [])
    if "SequenceClassification" in arch:
        cls = ORTModelForSequenceClassification
    elif "TokenClassification" in arch:
        cls = ORTModelForTokenClassification
    else:
        cls = ORTModelForFeatureExtraction
    with tempfile.TemporaryDirectory() as tmp:
        cls.from_pretrained(str(checkpoint), export=True).save_pretrained(tmp)
        ORTQuantizer.from_pretrained(tmp).quantize(
            save_dir=str(out), quantization_config=AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
        )
    return out / "model_quantized.onnx"


def bundle_feeds(bundle: Path, texts: Sequence[str], batch: int = CALIBRATION_BATCH) -> list[dict[str, np.ndarray]]:
    """``texts`` tokenized as the bundle tokenizes them (its default prefix, at most :data:`MAX_TOKENS`
    tokens), in padded batches of ``batch``: the model's feeds."""
    from mbert_edge.manifest import Manifest
    from mbert_edge.tokenizer import BundleTokenizer

    manifest = Manifest.read(bundle / "manifest.json")
    tok = BundleTokenizer(bundle / "tokenizer.json", min(manifest.max_length, MAX_TOKENS))
    prefix = manifest.embedding.default_prefix if manifest.embedding else ""
    feeds = []
    for i in range(0, len(texts), batch):
        f = tok.pad(tok.encode([prefix + t for t in texts[i : i + batch]]))
        feeds.append({k: f[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    return feeds


def calibration_feeds(bundle: Path, n: int = CALIBRATION_TEXTS) -> list[dict[str, np.ndarray]]:
    """``n`` training-split corpus sentences (all corpus languages) as :func:`bundle_feeds`, in batches of
    :data:`CALIBRATION_BATCH`."""
    from mbert_edge_export.quantize.calibration import corpus_sample

    return bundle_feeds(bundle, corpus_sample(n, seed=CALIBRATION_SEED, held_out=False).texts)


def openvino_int8(bundle: Path, out: Path, n: int = CALIBRATION_TEXTS) -> Path:
    """NNCF's post-training INT8 (transformer preset) of ``bundle``'s fp32 ``model.onnx``, calibrated on
    :func:`calibration_feeds`: ``out/model.xml``."""
    from mbert_edge.manifest import Manifest

    onnx_file = bundle / "model.onnx"
    if not onnx_file.exists():
        raise SystemExit(f"error: {bundle} has no fp32 model.onnx (export it without --quantize)")
    if (Manifest.read(bundle / "manifest.json").export or {}).get("trim"):
        # the students benchmark feeds a peer the teacher checkpoint's token ids: its file must be untrimmed
        raise SystemExit(f"error: {bundle} is trimmed; a peer's file comes from the untrimmed fp32 bundle")
    return nncf_int8(onnx_file, out, calibration_feeds(bundle, n))


def nncf_int8(onnx_file: Path, out: Path, feeds: Sequence[dict[str, np.ndarray]]) -> Path:
    """OpenVINO's recipe: ``ov.convert_model`` of the plain fp32 ONNX graph (dynamic axes; converting the
    PyTorch model directly traced the attention mask's shape), NNCF's post-training INT8 for transformers
    calibrated on ``feeds`` (batches): ``out/model.xml``."""
    import nncf
    import openvino as ov

    model = ov.convert_model(str(onnx_file))
    names = {i.get_any_name() for i in model.inputs}
    data = [{k: v for k, v in f.items() if k in names} for f in feeds]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(data),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(data),  # NNCF counts dataset items: here, batches
    )
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out / "model.xml"))
    return out / "model.xml"


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``optimum CHECKPOINT OUT`` or ``openvino BUNDLE OUT``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("peer", choices=("optimum", "openvino"))
    ap.add_argument("source", type=Path, help="optimum: the teacher checkpoint; openvino: its fp32 bundle")
    ap.add_argument("out", type=Path, help="directory to write")
    ap.add_argument("--calibration-texts", type=int, default=CALIBRATION_TEXTS, help="openvino only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"error: {args.out} exists and is not empty")
    if args.peer == "optimum":
        path = optimum_int8(args.source, args.out)
    else:
        path = openvino_int8(args.source, args.out, args.calibration_texts)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
