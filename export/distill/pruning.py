"""Feed-forward width pruning: the student keeps the ``N`` feed-forward neurons of each layer that matter most.

A BERT layer's feed-forward block is ``output.dense(act(intermediate.dense(x)))``; with the attention's own
GEMMs it is most of an INT8 layer's time (e5-small: 384 -> 1536 -> 384). Narrowing it is the one cut that
needs no new kernel and keeps the graph's every fusion.

Which neurons: each neuron ``i`` of a layer is scored by how much it writes into the residual stream on
training text, ``mean_tokens |act_i| * ||W_out[:, i]||_2`` (activation-based importance as in NVIDIA's
Minitron, Muralidharan et al. 2024, weighted by the norm of the neuron's output column), measured in the
teacher at the layers the student keeps. The top ``N`` are kept in their original order; rows of
``intermediate.dense`` and columns of ``output.dense`` are sliced, and ``config.intermediate_size`` is set so
the student saves and loads as an ordinary checkpoint. Distillation then trains the narrower student.

Dropping neuron ``i`` is exactly zeroing its output column (the test suite checks this equality).

**Refit** (``refit=True``; ``distill`` does it unless ``--no-ffn-refit``): dropping neurons loses what they
wrote. Instead of keeping the kept neurons' output columns as they were, each layer's ``output.dense`` (weights
and bias) is solved by least squares so that the kept neurons reproduce the *whole* block's output on the same
training text, the layer-wise reconstruction of post-training structured pruning (Kwon et al. 2022; the bias
term alone is FLAP's compensation, An et al. 2024). The same forward pass that scores the neurons accumulates
each layer's Gram matrix of the activations (with a column of ones for the bias), so the solve needs no second
pass:
``[W' b'] = (G_KK + ridge)^-1 G_K: [W b]`` with ``K`` the kept neurons and the ones column.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mbert_edge_export.distill.layers import encoder_layers
from mbert_edge_export.distill.modeling import collate, length_batches
from mbert_edge_export.errors import DistillError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: training texts scored (evenly spaced over the training set) and tokens read per text
IMPORTANCE_TEXTS, IMPORTANCE_LENGTH = 512, 128
METHOD = "mean |activation| x output-column norm, on training text at the kept teacher layers"
REFIT_METHOD = "output.dense refit by least squares to the whole block's output on the scored text"
#: ridge added to the refit's normal equations, relative to the mean diagonal of the kept neurons' Gram matrix
REFIT_RIDGE = 1e-4


def feed_forward(layer: Any) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """The two linear maps of a BERT-family layer's feed-forward block: ``(intermediate.dense, output.dense)``."""
    import torch

    inner = getattr(getattr(layer, "intermediate", None), "dense", None)
    outer = getattr(getattr(layer, "output", None), "dense", None)
    if not isinstance(inner, torch.nn.Linear) or not isinstance(outer, torch.nn.Linear):
        raise DistillError(
            f"{type(layer).__name__} has no intermediate.dense / output.dense pair; --intermediate-size supports "
            "BERT-family layers (BERT, XLM-R, e5, ...)"
        )
    return inner, outer


def intermediate_size(model: Any) -> int:
    """The feed-forward width of ``model``'s layers."""
    return int(feed_forward(encoder_layers(model)[0])[0].out_features)


def importance(teacher: Any, layer_map: Sequence[int], ids: Sequence[Sequence[int]], pad_id: int) -> list[torch.Tensor]:
    """Each feed-forward neuron's score (see the module docstring) at teacher layers ``layer_map``, over the
    texts ``ids`` (token ids, read up to :data:`IMPORTANCE_LENGTH` tokens). One float64 tensor per kept layer."""
    return activation_stats(teacher, layer_map, ids, pad_id)[0]


def activation_stats(
    teacher: Any, layer_map: Sequence[int], ids: Sequence[Sequence[int]], pad_id: int, gram: bool = False
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """One pass over ``ids``: each layer's neuron scores (:func:`importance`) and, with ``gram``, the Gram
    matrix ``[A 1]^T [A 1]`` of its feed-forward activations ``A`` (tokens x neurons) with a column of ones,
    float64, for :func:`refit_output`."""
    import torch

    layers = encoder_layers(teacher)
    device = next(teacher.parameters()).device
    sums = [torch.zeros(feed_forward(layers[i])[0].out_features, dtype=torch.float64) for i in layer_map]
    grams = [torch.zeros(len(s) + 1, len(s) + 1, dtype=torch.float64) for s in sums] if gram else None
    tokens = 0
    mask: torch.Tensor | None = None

    def hook(slot: int) -> Any:
        def record(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
            assert mask is not None
            act = output.float().abs() * mask.unsqueeze(-1)
            sums[slot] += act.sum(dim=(0, 1)).double().cpu()
            if grams is not None:
                rows = output.float()[mask.bool()]  # the real tokens' activations, signed
                rows = torch.cat([rows, torch.ones(len(rows), 1, device=rows.device)], dim=1)
                grams[slot] += (rows.T @ rows).double().cpu()

        return record

    handles = [layers[i].intermediate.register_forward_hook(hook(slot)) for slot, i in enumerate(layer_map)]
    cut = [list(x[:IMPORTANCE_LENGTH]) for x in ids]
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.inference_mode():
            for b in length_batches([len(x) for x in cut]):
                batch = collate([cut[i] for i in b], pad_id, device)
                mask = batch["attention_mask"].float()
                tokens += int(mask.sum())
                teacher(**batch)
    finally:
        for h in handles:
            h.remove()
        teacher.train(was_training)
    scores = []
    for slot, i in enumerate(layer_map):
        out_norm = feed_forward(layers[i])[1].weight.detach().double().norm(dim=0).cpu()
        scores.append(sums[slot] / max(tokens, 1) * out_norm)
    return scores, grams


def refit_output(
    weight: torch.Tensor, bias: torch.Tensor | None, gram: torch.Tensor, kept: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The output projection (``weight`` of shape out x neurons, ``bias``) that the ``kept`` neurons need to
    reproduce the whole block's output ``A W^T + b`` in the least-squares sense over the activations whose
    Gram matrix with a ones column is ``gram`` (:func:`activation_stats`). Returns ``(weight', bias')``, float64,
    of shapes out x len(kept) and out (a layer without a bias gets none: ``bias'`` is then zeros)."""
    import torch

    n, out = weight.shape[1], weight.shape[0]
    b = torch.zeros(out, dtype=torch.float64) if bias is None else bias.detach().double().cpu()
    w_aug = torch.cat([weight.detach().double().cpu().T, b[None, :]])  # (n + 1) x out: [A 1] @ w_aug = A W^T + b
    # the kept neurons, and the ones column where the layer has a bias to carry what they cannot
    rows = torch.tensor([*kept, n] if bias is not None else list(kept), dtype=torch.long)
    g_kk = gram[rows][:, rows].clone()
    k = len(kept)
    g_kk.diagonal()[:k] += REFIT_RIDGE * float(g_kk.diagonal()[:k].mean())  # the bias is not shrunk
    solved = torch.linalg.solve(g_kk, gram[rows] @ w_aug)  # len(rows) x out
    return solved[:k].T.contiguous(), (solved[k] if bias is not None else b).contiguous()


def top_neurons(scores: Sequence[torch.Tensor], width: int) -> list[list[int]]:
    """The ``width`` best-scored neurons of each layer, in their original order (ties: the lower index)."""
    import torch

    keep = []
    for s in scores:
        if not 1 <= width <= s.numel():
            raise DistillError(f"--intermediate-size {width}: the layers have {s.numel()} feed-forward neurons")
        order = torch.argsort(-s, stable=True)[:width]
        keep.append(sorted(int(i) for i in order))
    return keep


def prune(model: Any, keep: Sequence[Sequence[int]], grams: Sequence[torch.Tensor] | None = None) -> None:
    """Keep only neurons ``keep[j]`` of layer ``j``'s feed-forward block, in place; sets
    ``config.intermediate_size`` (every layer must keep the same number). With ``grams`` (layer ``j``'s from
    :func:`activation_stats`), each output projection is refit (:func:`refit_output`) instead of sliced."""
    import torch

    layers = encoder_layers(model)
    if len(keep) != len(layers):
        raise DistillError(f"{len(keep)} neuron lists for {len(layers)} layers")
    widths = {len(k) for k in keep}
    if len(widths) != 1:
        raise DistillError(f"every layer must keep the same number of feed-forward neurons, not {sorted(widths)}")
    if grams is not None and len(grams) != len(layers):
        raise DistillError(f"{len(grams)} Gram matrices for {len(layers)} layers")
    for j, (layer, kept) in enumerate(zip(layers, keep, strict=True)):
        inner, outer = feed_forward(layer)
        idx = torch.tensor(list(kept), dtype=torch.long, device=inner.weight.device)
        new_inner = torch.nn.Linear(inner.in_features, len(kept), bias=inner.bias is not None)
        new_outer = torch.nn.Linear(len(kept), outer.out_features, bias=outer.bias is not None)
        new_inner.to(device=inner.weight.device, dtype=inner.weight.dtype)
        new_outer.to(device=outer.weight.device, dtype=outer.weight.dtype)
        with torch.no_grad():
            new_inner.weight.copy_(inner.weight[idx])
            if inner.bias is not None:
                new_inner.bias.copy_(inner.bias[idx])
            if grams is not None:
                weight, bias = refit_output(outer.weight, outer.bias, grams[j], kept)
                new_outer.weight.copy_(weight)
                if outer.bias is not None:
                    new_outer.bias.copy_(bias)
            else:
                new_outer.weight.copy_(outer.weight[:, idx])
                if outer.bias is not None:
                    new_outer.bias.copy_(outer.bias)
        new_inner.weight.requires_grad_(inner.weight.requires_grad)
        new_outer.weight.requires_grad_(outer.weight.requires_grad)
        layer.intermediate.dense = new_inner
        layer.output.dense = new_outer
    model.config.intermediate_size = widths.pop()


def scored_sample(ids: Sequence[Sequence[int]]) -> list[Sequence[int]]:
    """The :data:`IMPORTANCE_TEXTS` training texts, evenly spaced over ``ids``, that neurons are scored (and
    output projections refit) on."""
    step = max(1, len(ids) // IMPORTANCE_TEXTS)
    return [ids[i] for i in range(0, len(ids), step)][:IMPORTANCE_TEXTS]


def refit_grams(
    teacher: Any, layer_map: Sequence[int], ids: Sequence[Sequence[int]], pad_id: int
) -> list[torch.Tensor]:
    """The Gram matrices :func:`prune_by_importance` refits with, for ``teacher`` at ``layer_map`` on the same
    sample of ``ids``: to narrow another copy of a student exactly as it was narrowed (its kept neurons known)."""
    grams = activation_stats(teacher, layer_map, scored_sample(ids), pad_id, gram=True)[1]
    assert grams is not None
    return grams


def prune_by_importance(
    teacher: Any,
    student: Any,
    layer_map: Sequence[int],
    width: int,
    ids: Sequence[Sequence[int]],
    pad_id: int,
    refit: bool = False,
) -> tuple[list[list[int]], dict[str, Any]]:
    """Score ``teacher``'s neurons at ``layer_map`` on a sample of ``ids`` and prune ``student`` (whose layers
    are those) to ``width`` of them, with ``refit`` refitting each output projection on the same sample; returns
    the kept neurons per layer and a report. ``teacher`` may be the student itself (a trained student narrowed in
    a second stage): scoring ends before pruning starts."""
    total = intermediate_size(teacher)
    sample = scored_sample(ids)
    log.info("scoring the %d feed-forward neurons per layer on %d training texts", total, len(sample))
    scores, grams = activation_stats(teacher, layer_map, sample, pad_id, gram=refit)
    keep = top_neurons(scores, width)
    prune(student, keep, grams)
    kept_share = [float(s[k].sum() / s.sum()) for s, k in zip(scores, keep, strict=True)]
    log.info(
        "feed-forward width %d -> %d: the kept neurons hold %s of each layer's importance",
        total,
        width,
        ", ".join(f"{x:.0%}" for x in kept_share),
    )
    return keep, {
        "intermediate_size": {"teacher": total, "student": width},
        "method": METHOD,
        "texts": len(sample),
        "importance_kept": [round(x, 4) for x in kept_share],
        **({"refit": REFIT_METHOD} if refit else {}),
    }


__all__ = [
    "IMPORTANCE_LENGTH",
    "IMPORTANCE_TEXTS",
    "METHOD",
    "REFIT_METHOD",
    "activation_stats",
    "feed_forward",
    "importance",
    "intermediate_size",
    "prune",
    "prune_by_importance",
    "refit_grams",
    "refit_output",
    "scored_sample",
    "top_neurons",
]
