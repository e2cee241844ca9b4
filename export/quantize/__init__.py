"""INT8 quantization of the exported ONNX model, with an accuracy gate.

* :mod:`.dynamic` — weights INT8 per channel, activations quantized on the fly (no calibration needed).
* :mod:`.static` — QDQ INT8 with activation ranges from calibration text (MinMax, Entropy, Percentile).
* :mod:`.calibration` — calibration and held-out text: a user file (txt, jsonl, csv) or a multilingual sample.
* :mod:`.gate` — compares the INT8 model with fp32 and keeps the most sensitive nodes in fp32 when needed.
"""
