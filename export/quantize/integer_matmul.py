"""Integer matrix products that rescale in the kernel: ``MatMulInteger -> Cast -> Mul`` as one
``MatMulIntegerToFloat``.

ONNX Runtime's dynamic quantizer writes each INT8 MatMul as ``MatMulInteger`` (int32 result), ``Cast`` to
float and ``Mul`` by ``a_scale * b_scale``. With per-batch ranges ONNX Runtime fuses that chain at load time
(its ``MatMulIntegerToFloatFusion`` needs the scale product to be a ``Mul`` of the runtime scale). Once the
activation ranges are fixed (:mod:`.fixed_ranges`), both scales are constants, constant folding turns their
product into one, and the fusion no longer matches: the int32 result is written out, read back by ``Cast``,
written, read by ``Mul``. Profiled on the 6-layer e5 student at b1 x s128: ``Cast`` and ``Mul`` took 15% of
the time. This module writes the fused contrib op itself, with the same inputs; the kernel applies
``a_scale * b_scale`` (per output column) to the int32 accumulator as it leaves the GEMM (the same float32
products as the chain), so the outputs are those of the chain.

A bias ``Add`` right after the chain (a 1-D constant, one value per output column: the attention output's
and both FFN matmuls' biases, once the graph optimizer leaves them unfused, see ``optimize.py``) goes into
the kernel too, as ``MatMulIntegerToFloat``'s optional bias input: one pass over the activations fewer, and
``Gelu`` then reads the GEMM's output directly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"


def fuse(model: Any) -> int:
    """Replace every ``MatMulInteger -> Cast(float) -> Mul(Mul(a_scale, b_scale))`` chain of ``model`` (an
    ``onnx.ModelProto``, changed in place) whose two scales are initializers (a per-tensor ``a_scale``) and
    whose intermediate results feed nothing else by one ``com.microsoft.MatMulIntegerToFloat``, with the
    chain's bias ``Add`` folded in when one follows (see the module's docstring). A scale ``Mul`` goes too
    once every chain it fed is fused. Returns how many chains were fused."""
    from onnx import TensorProto, helper

    graph = model.graph
    nodes = list(graph.node)
    inits = {t.name: t for t in graph.initializer}
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, []).append(i)
    outputs = {o.name for o in graph.output}

    def only_consumer(name: str, op: str) -> int | None:
        users = consumers.get(name, [])
        if name in outputs or len(users) != 1 or nodes[users[0]].op_type != op:
            return None
        return users[0]

    def per_tensor(name: str) -> bool:
        return list(inits[name].dims) in ([], [1])

    def bias_add(name: str, weight: str) -> tuple[int, str] | None:
        """The ``Add`` of a 1-D float constant, one value per output column, that alone reads ``name``."""
        a = only_consumer(name, "Add")
        if a is None or weight not in inits or len(inits[weight].dims) != 2:
            return None
        other = next((i for i in nodes[a].input if i != name), None)
        if other is None or other not in inits or inits[other].data_type != TensorProto.FLOAT:
            return None
        return (a, other) if list(inits[other].dims) == [inits[weight].dims[1]] else None

    drop: set[int] = set()
    fused_users: dict[int, int] = {}  # scale Mul -> how many of its consumers were fused
    added: dict[int, Any] = {}  # index of the MatMulInteger -> the fused node
    for index, node in enumerate(nodes):
        if node.op_type != "MatMulInteger" or node.domain not in ("", "ai.onnx"):
            continue
        c = only_consumer(node.output[0], "Cast")
        if c is None or next((a.i for a in nodes[c].attribute if a.name == "to"), None) != TensorProto.FLOAT:
            continue
        m = only_consumer(nodes[c].output[0], "Mul")
        if m is None:
            continue
        mul = nodes[m]
        scale = mul.input[1] if mul.input[0] == nodes[c].output[0] else mul.input[0]
        s = producer.get(scale)
        if s is None or nodes[s].op_type != "Mul" or not all(i in inits for i in nodes[s].input):
            continue
        a_scale, b_scale = nodes[s].input
        if not per_tensor(a_scale):
            a_scale, b_scale = b_scale, a_scale  # the per-tensor one is A's
        if not per_tensor(a_scale):
            continue  # two per-column scales: not this pattern
        a_zero = node.input[2] if len(node.input) > 2 else ""
        b_zero = node.input[3] if len(node.input) > 3 else ""
        inputs, output = [node.input[0], node.input[1], a_scale, b_scale, a_zero, b_zero], mul.output[0]
        bias = bias_add(output, node.input[1])
        if bias is not None:
            inputs.append(bias[1])
            output = nodes[bias[0]].output[0]
            drop.add(bias[0])
        added[index] = helper.make_node(
            "MatMulIntegerToFloat",
            inputs,
            [output],
            name=f"{mul.output[0]}/MatMulIntegerToFloat",  # output names are unique; node names may be empty
            domain=MS_DOMAIN,
        )
        drop.update((index, c, m))
        fused_users[s] = fused_users.get(s, 0) + 1
    for s, n in fused_users.items():
        if n == len(consumers.get(nodes[s].output[0], [])) and nodes[s].output[0] not in outputs:
            drop.add(s)
    if not added:
        return 0
    del graph.node[:]
    graph.node.extend(added.get(i, n) for i, n in enumerate(nodes) if i in added or i not in drop)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(added)


def fuse_file(path: Path) -> int:
    """:func:`fuse` on the ONNX file at ``path``, rewritten in place (its weights stay where they are).
    Returns how many chains were fused."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    fused = fuse(model)
    if fused:
        onnx.save_model(model, str(path))
        log.info("fused %d integer MatMuls with their rescaling (MatMulIntegerToFloat)", fused)
    return fused
