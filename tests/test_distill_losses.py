"""The distillation losses against hand-written NumPy references and their wiring.

The pointwise losses (embedding, KL, classification, token, hidden-state) are each compared with the same
arithmetic written out in NumPy on small fixed arrays, including the cases that tell a right implementation
from a plausible wrong one: the ``T^2`` factor, the KL's direction, unlabelled rows, padding positions.

The in-batch relation loss is new enough to check on its own: its value against a direct NumPy computation of
the definition, the cases with a known answer (a student that equals the teacher, or the teacher scaled per
row, gives 0), and that training with it is recorded and refused where it does not apply.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mbert_edge_export.distill import losses  # noqa: E402


def _reference(student: np.ndarray, teacher: np.ndarray, temperature: float) -> float:
    """The definition, row by row: KL(p_t || p_s) over each row's cosines to the other rows, mean over rows."""

    def dist(x: np.ndarray, i: int) -> np.ndarray:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        sims = np.array([x[i] @ x[j] for j in range(len(x)) if j != i]) / temperature
        e = np.exp(sims - sims.max())
        return e / e.sum()

    total = 0.0
    for i in range(len(student)):
        p_t, p_s = dist(teacher, i), dist(student, i)
        total += float(np.sum(p_t * (np.log(p_t) - np.log(p_s))))
    return total / len(student)


def test_relation_loss_matches_the_definition():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(6, 8))
    student = teacher + 0.4 * rng.normal(size=(6, 8))
    for temperature in (0.05, 1.0):
        got = losses.relation_loss(torch.tensor(student), torch.tensor(teacher), temperature)
        assert float(got) == pytest.approx(_reference(student, teacher, temperature), rel=1e-5)
        assert float(got) > 0


def test_relation_loss_is_zero_for_the_teachers_own_ranking():
    """Only directions count: the teacher's vectors, each scaled by its own factor, cost nothing; a batch of
    two (one neighbour each, so nothing to rank) costs nothing either."""
    rng = np.random.default_rng(1)
    teacher = torch.tensor(rng.normal(size=(5, 8)))
    scaled = teacher * torch.tensor([[0.5], [2.0], [3.0], [1.0], [7.0]])
    assert float(losses.relation_loss(scaled, teacher, 0.05)) == pytest.approx(0.0, abs=1e-7)
    assert float(losses.relation_loss(teacher[:2] + 1.0, teacher[:2], 0.05)) == 0.0


def test_relation_loss_gradient_moves_the_student_toward_the_teachers_ranking():
    """A few plain gradient steps on the student's vectors lower the loss (the gradient is the loss's own)."""
    rng = np.random.default_rng(2)
    teacher = torch.tensor(rng.normal(size=(8, 16)), dtype=torch.float32)
    student = torch.tensor(rng.normal(size=(8, 16)), dtype=torch.float32, requires_grad=True)
    first = float(losses.relation_loss(student, teacher, 0.1))
    opt = torch.optim.SGD([student], lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        losses.relation_loss(student, teacher, 0.1).backward()
        opt.step()
    assert float(losses.relation_loss(student, teacher, 0.1)) < 0.5 * first


# -- the pointwise losses against NumPy arithmetic --------------------------------------------------------------

RTOL = 1e-5


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax over the last axis, written out."""
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _kl_rows(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(softmax(p) || softmax(q)) per row of ``(N, C)`` logits."""
    log_p, log_q = _log_softmax(p_logits), _log_softmax(q_logits)
    return (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)


def _t(x: np.ndarray) -> torch.Tensor:
    """A float64 tensor (so that rtol 1e-5 compares arithmetic, not rounding)."""
    return torch.tensor(x, dtype=torch.float64)


STUDENT_LOGITS = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-2.0, 1.5, 1.0], [0.0, 0.0, 0.0]])
TEACHER_LOGITS = np.array([[3.0, 0.0, -1.0], [1.0, -0.5, 2.0], [-1.0, 2.5, -0.5], [4.0, -4.0, 0.0]])


def test_embedding_loss_is_weighted_mse_plus_one_minus_mean_cosine():
    """``mse_weight * mean((s - t)^2) + cosine_weight * (1 - mean row cosine)``, and the parts it reports."""
    s = np.array([[1.0, 2.0, 0.0, -1.0], [0.5, -0.5, 2.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    t = np.array([[1.5, 1.0, 0.5, -1.0], [0.0, 0.0, 2.0, 2.0], [0.0, 3.0, 0.0, 0.0]])
    mse = float(((s - t) ** 2).sum() / s.size)
    cosines = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(s, t, strict=True)]
    one_minus_cos = 1.0 - sum(cosines) / len(cosines)
    assert cosines[2] == 0.0  # orthogonal rows: that row costs a whole 1 in the cosine part
    for mse_w, cos_w in ((1.0, 1.0), (0.3, 2.0), (1.0, 0.0), (0.0, 1.0)):
        loss, parts = losses.embedding_loss(_t(s), _t(t), mse_weight=mse_w, cosine_weight=cos_w)
        assert float(loss) == pytest.approx(mse_w * mse + cos_w * one_minus_cos, rel=RTOL)
        assert parts["mse"] == pytest.approx(mse, rel=RTOL)
        assert parts["1-cos"] == pytest.approx(one_minus_cos, rel=RTOL)
    # the cosine part sees only directions: the teacher scaled per row leaves it at 0, the MSE part does not
    loss, parts = losses.embedding_loss(_t(t * np.array([[2.0], [0.5], [3.0]])), _t(t), mse_weight=0.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-12) and parts["mse"] > 0


def test_kl_loss_is_t_squared_kl_teacher_to_student_averaged_over_rows():
    """``T^2 * mean_rows KL(softmax(t / T) || softmax(s / T))``; the direction is teacher || student."""
    for temperature in (1.0, 2.0, 0.5, 4.0):
        want = temperature**2 * _kl_rows(TEACHER_LOGITS / temperature, STUDENT_LOGITS / temperature).mean()
        got = losses.kl_loss(_t(STUDENT_LOGITS), _t(TEACHER_LOGITS), temperature)
        assert float(got) == pytest.approx(float(want), rel=RTOL), temperature
    # the direction: these logits make the two KLs clearly different, and the loss is KL(teacher || student)
    forward = float(_kl_rows(TEACHER_LOGITS, STUDENT_LOGITS).mean())
    backward = float(_kl_rows(STUDENT_LOGITS, TEACHER_LOGITS).mean())
    assert abs(forward - backward) > 0.1
    got = float(losses.kl_loss(_t(STUDENT_LOGITS), _t(TEACHER_LOGITS), 1.0))
    assert got == pytest.approx(forward, rel=RTOL) and got != pytest.approx(backward, rel=1e-2)


def test_kl_loss_t_squared_factor():
    """Logits scaled by ``T`` read at temperature ``T`` are the unscaled ones at 1: exactly ``T^2`` times the loss."""
    base = float(losses.kl_loss(_t(STUDENT_LOGITS), _t(TEACHER_LOGITS), 1.0))
    for temperature in (2.0, 3.0, 0.5):
        scaled = losses.kl_loss(_t(temperature * STUDENT_LOGITS), _t(temperature * TEACHER_LOGITS), temperature)
        assert float(scaled) == pytest.approx(temperature**2 * base, rel=RTOL)
    assert float(losses.kl_loss(_t(TEACHER_LOGITS), _t(TEACHER_LOGITS), 2.0)) == pytest.approx(0.0, abs=1e-12)


def test_classification_loss_adds_cross_entropy_on_labelled_rows_only():
    """KL part plus cross-entropy (at T = 1, on the student's raw logits) averaged over the rows with a label;
    ``-100`` rows add no cross-entropy, and without any label there is no CE part at all."""
    temperature = 2.0
    kl = temperature**2 * _kl_rows(TEACHER_LOGITS / temperature, STUDENT_LOGITS / temperature).mean()
    labels = np.array([0, -100, 1, -100])
    log_p = _log_softmax(STUDENT_LOGITS)
    ce = -(log_p[0, 0] + log_p[2, 1]) / 2  # the two labelled rows, averaged over those two only
    for kl_w, ce_w in ((1.0, 1.0), (0.5, 2.0)):
        loss, parts = losses.classification_loss(
            _t(STUDENT_LOGITS), _t(TEACHER_LOGITS), torch.tensor(labels), temperature, kl_weight=kl_w, ce_weight=ce_w
        )
        assert float(loss) == pytest.approx(kl_w * kl + ce_w * ce, rel=RTOL)
        assert parts["kl"] == pytest.approx(kl, rel=RTOL) and parts["ce"] == pytest.approx(ce, rel=RTOL)
    # the unlabelled rows' logits move the KL part only: the CE part stays that of rows 0 and 2
    moved = STUDENT_LOGITS.copy()
    moved[[1, 3]] = [[9.0, -9.0, 0.0], [-5.0, 5.0, 5.0]]
    _, moved_parts = losses.classification_loss(_t(moved), _t(TEACHER_LOGITS), torch.tensor(labels), temperature)
    assert moved_parts["ce"] == pytest.approx(ce, rel=RTOL)
    assert moved_parts["kl"] != pytest.approx(kl, rel=1e-3)
    # no label anywhere, labels=None, or ce_weight 0: the KL part alone
    for lab, ce_w in ((torch.full((4,), -100), 1.0), (None, 1.0), (torch.tensor(labels), 0.0)):
        loss, parts = losses.classification_loss(
            _t(STUDENT_LOGITS), _t(TEACHER_LOGITS), lab, temperature, kl_weight=0.7, ce_weight=ce_w
        )
        assert float(loss) == pytest.approx(0.7 * kl, rel=RTOL) and "ce" not in parts


def test_token_loss_is_per_token_kl_over_unmasked_tokens():
    """Mean over real tokens of ``T^2 * KL(teacher || student)``; logits at padding positions change nothing."""
    rng = np.random.default_rng(3)
    student = rng.normal(size=(2, 4, 3)) * 2
    teacher = rng.normal(size=(2, 4, 3)) * 2
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    temperature = 1.5
    kept = mask.astype(bool)
    per_token = temperature**2 * _kl_rows(teacher[kept] / temperature, student[kept] / temperature)
    assert per_token.shape == (5,)
    want = per_token.sum() / 5  # five real tokens: a mean over tokens, not over texts
    for kl_w in (1.0, 0.25):
        loss, parts = losses.token_loss(_t(student), _t(teacher), torch.tensor(mask), temperature, kl_weight=kl_w)
        assert float(loss) == pytest.approx(kl_w * want, rel=RTOL)
        assert parts["kl"] == pytest.approx(want, rel=RTOL)
    # garbage at the padded positions of both models: the same loss
    s2, t2 = student.copy(), teacher.copy()
    s2[~kept] = rng.normal(size=(3, 3)) * 50
    t2[~kept] = rng.normal(size=(3, 3)) * 50
    loss2, _ = losses.token_loss(_t(s2), _t(t2), torch.tensor(mask), temperature)
    assert float(loss2) == pytest.approx(want, rel=RTOL)


def test_hidden_loss_is_mse_between_mapped_layers_over_real_tokens():
    """Student layer ``i`` (``hidden_states[i + 1]``) against teacher layer ``layer_map[i]``
    (``hidden_states[layer_map[i] + 1]``): MSE over real tokens and features, averaged over the mapped layers."""
    rng = np.random.default_rng(4)
    batch, width, hidden = 2, 3, 4
    teacher = [rng.normal(size=(batch, width, hidden)) for _ in range(5)]  # embeddings + 4 layers
    student = [rng.normal(size=(batch, width, hidden)) for _ in range(3)]  # embeddings + 2 layers
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    layer_map = [1, 3]
    kept = mask.astype(bool)
    per_layer = []
    for i, t in enumerate(layer_map):
        diff = student[i + 1][kept] - teacher[t + 1][kept]  # (5 real tokens, hidden)
        per_layer.append(float((diff**2).sum()) / diff.size)
    want = sum(per_layer) / len(per_layer)
    got = losses.hidden_loss([_t(x) for x in student], [_t(x) for x in teacher], layer_map, torch.tensor(mask))
    assert float(got) == pytest.approx(want, rel=RTOL)
    # padding positions and the embedding outputs (index 0) play no part
    s2 = [x.copy() for x in student]
    t2 = [x.copy() for x in teacher]
    for x in (*s2, *t2):
        x[~kept] = 99.0
    s2[0][:] = -7.0
    t2[0][:] = 7.0
    got2 = losses.hidden_loss([_t(x) for x in s2], [_t(x) for x in t2], layer_map, torch.tensor(mask))
    assert float(got2) == pytest.approx(want, rel=RTOL)
    # a student equal to the teacher at the mapped layers costs nothing
    same = [_t(teacher[0]), _t(teacher[2]), _t(teacher[4])]
    assert float(losses.hidden_loss(same, [_t(x) for x in teacher], layer_map, torch.tensor(mask))) == 0
