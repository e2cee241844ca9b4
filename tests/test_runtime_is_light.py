"""The runtime never imports torch, transformers, optimum or batch scoring (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

# mbert_edge.batch (offline scoring) and its pyarrow/ray are imported only by `mbert-edge score` and batch users
HEAVY = (
    "torch",
    "transformers",
    "optimum",
    "onnx",
    "openvino",
    "mbert_edge_export",
    "mbert_edge.batch",
    "pyarrow",
    "ray",
)


def test_load_and_predict_without_heavy_imports(bundles):
    code = f"""
import json, sys
import mbert_edge
m = mbert_edge.load({str(bundles["text-classification"])!r})
r = m.predict(["Hallo Welt", "Привет мир"])
e = mbert_edge.load({str(bundles["feature-extraction"])!r}).embed("hola")
t = mbert_edge.load({str(bundles["token-classification"])!r}).predict("Anna wohnt in Berlin")
print(json.dumps({{"heavy": [k for k in {HEAVY!r} if k in sys.modules], "n": len(r), "dim": int(e.shape[0])}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"heavy": [], "n": 2, "dim": 32}
