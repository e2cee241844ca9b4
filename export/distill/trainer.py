"""The training loop: AdamW with linear warmup and decay, gradient clipping, a step or time budget,
resume checkpoints, progress.

Reproducible: the order of texts comes from ``(seed, epoch)``, dropout's random numbers from
``(seed, step)``, and the learning rate from ``(step, planned steps)``, so the only state to keep between runs
is the step count, the trainable weights, AdamW's moments and the teacher cache. They are written every
``checkpoint_every`` steps, and when the run is interrupted (Ctrl-C, acted on between steps), into
``<work>/_resume/`` (safetensors plus ``state.json``; written beside it and renamed, so a crash while saving
keeps the previous checkpoint).
Run the same command again and it continues from there, reaching the same student as an uninterrupted run
(bit for bit on the same machine, when the plan was set by a step budget).

With a time budget the plan (how many steps, so that the learning rate reaches 0 at the end) is fitted to
the measured step time: after the first few steps and every 25 steps after that the planned steps shrink if
the rest would not fit before the deadline. A time-bounded run is therefore not reproducible step for step.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION
from mbert_edge_export.distill import losses
from mbert_edge_export.distill.modeling import collate, run
from mbert_edge_export.distill.precision import autocast
from mbert_edge_export.distill.settings import DistillSettings
from mbert_edge_export.distill.teacher_cache import LOGITS, POOLED, TOKEN_LOGITS, TeacherCache
from mbert_edge_export.errors import DistillError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

RESUME_DIR = "_resume"
STATE_FILE = "state.json"
SORT_CHUNK = 50  #: batches per chunk sorted by length (little padding, still shuffled)
REPLAN_FIRST, REPLAN_EVERY = 5, 25
#: steps at the end of a time budget reserved for writing the last checkpoint (in step times)
SAVE_RESERVE_STEPS = 2

StepCallback = Callable[[int, float], None]


@dataclass
class TrainState:
    """What a resume checkpoint records besides weights, moments and the teacher cache."""

    fingerprint: str
    settings: dict[str, Any]
    layer_map: list[int]
    #: feed-forward pruning: ``keep`` (neurons kept per student layer) and its report; None when not pruned
    ffn_pruning: dict[str, Any] | None = None
    step: int = 0  #: optimizer steps done
    planned_steps: int = 0
    losses: list[float] = field(default_factory=list)  #: loss of every step
    train_seconds: float = 0.0  #: wall time in training steps, summed over runs
    teacher_seconds: float = 0.0  #: of which in the teacher's forward passes
    runs: int = 0  #: how many times training started (1 + resumes)
    #: wall seconds the earlier runs spent of the time budget (from each command's start to its last checkpoint)
    budget_seconds: float = 0.0


def read_state(work: Path) -> TrainState | None:
    """The state of the resume checkpoint in ``work``, or None when there is none."""
    for name in (RESUME_DIR, RESUME_DIR + ".old"):
        p = work / name / STATE_FILE
        if p.is_file():
            raw = json.loads(p.read_text(encoding="utf-8"))
            raw.pop("param_groups", None)
            return TrainState(**raw)
    return None


def resume_dir(work: Path) -> Path | None:
    """The complete resume checkpoint in ``work`` (the previous one if a save was cut short)."""
    for name in (RESUME_DIR, RESUME_DIR + ".old"):
        if (work / name / STATE_FILE).is_file():
            return work / name
    return None


def cache_kind(task: str) -> str:
    """What the teacher cache holds for ``task``."""
    return {FEATURE_EXTRACTION: POOLED, TEXT_CLASSIFICATION: LOGITS, TOKEN_CLASSIFICATION: TOKEN_LOGITS}[task]


def set_dropout(model: torch.nn.Module, p: float) -> int:
    """Set every dropout module of ``model`` to probability ``p`` (training only: inference never drops);
    returns how many there were. The saved config keeps the teacher's values."""
    import torch

    found = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for m in found:
        m.p = p  # attention reads its rate from its Dropout module too (eager and SDPA paths)
    return len(found)


class Trainer:
    """Trains ``student`` to imitate ``teacher`` on token ids ``ids`` (and gold ``labels``)."""

    def __init__(
        self,
        student: torch.nn.Module,
        teacher: torch.nn.Module,
        task: str,
        ids: Sequence[Sequence[int]],
        labels: Sequence[int | None],
        settings: DistillSettings,
        layer_map: list[int],
        pad_id: int,
        work: Path,
        fingerprint: str,
        pooling: str = "mean",
        device: str = "cpu",
        teacher_ids: Sequence[Sequence[int]] | None = None,
        teacher_pad_id: int | None = None,
        precision: str = "fp32",
        ffn_pruning: dict[str, Any] | None = None,
    ) -> None:
        import torch

        if teacher_ids is not None and (task == TOKEN_CLASSIFICATION or settings.hidden_weight > 0):
            raise ValueError("per-token targets need the student's tokenization: no teacher_ids with them")
        if teacher_ids is not None and len(teacher_ids) != len(ids):
            raise ValueError(f"{len(teacher_ids)} teacher_ids for {len(ids)} texts")
        self.student, self.teacher, self.task = student, teacher, task
        self.ids, self.settings, self.layer_map = ids, settings, layer_map
        #: what the teacher reads: by default the student's ids; ``teacher_ids`` when a vocabulary cap made
        #: the student's tokenization differ from the teacher's (pooled and sentence-level targets only)
        self.teacher_ids = ids if teacher_ids is None else teacher_ids
        self.teacher_pad_id = pad_id if teacher_pad_id is None else teacher_pad_id
        self.lengths = [len(x) for x in ids]
        self.labels = torch.tensor([-100 if x is None else x for x in labels], dtype=torch.long)
        self.has_labels = task == TEXT_CLASSIFICATION and bool((self.labels >= 0).any())
        self.pad_id, self.work, self.pooling, self.device = pad_id, work, pooling, device
        #: ``fp32`` or ``bf16`` (autocast of the forward passes; weights, optimizer and targets stay fp32)
        self.precision = precision
        self.n = len(ids)
        self.batches_per_epoch = math.ceil(self.n / settings.batch_size)
        self._epochs: dict[int, list[list[int]]] = {}

        width = int(student.config.hidden_size if task == FEATURE_EXTRACTION else student.config.num_labels)
        self.cache = TeacherCache(cache_kind(task), self.lengths, width)

        emb = student.get_input_embeddings()
        emb.weight.requires_grad_(settings.train_embeddings)
        decay, no_decay = [], []
        for name, p in student.named_parameters():
            if p.requires_grad:
                (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
        self.trainable = [n for n, p in student.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=settings.lr,
        )
        if settings.steps is not None:
            planned = settings.steps
        else:
            planned = max(1, math.ceil(settings.epochs * self.batches_per_epoch))
        self.full_plan = planned  #: the steps the recipe asks for; a time budget may plan fewer
        self.state = TrainState(
            fingerprint,
            settings.fingerprint_fields(),
            list(layer_map),
            ffn_pruning=ffn_pruning,
            planned_steps=planned,
        )

    # -- data order and schedule -------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch``: shuffled by ``(seed, epoch)``, grouped by length in chunks, order shuffled."""
        if epoch not in self._epochs:
            rng = np.random.default_rng([self.settings.seed, epoch])
            perm = rng.permutation(self.n).tolist()
            bs = self.settings.batch_size
            batches: list[list[int]] = []
            chunk = bs * SORT_CHUNK
            for start in range(0, self.n, chunk):
                part = sorted(perm[start : start + chunk], key=lambda i: -self.lengths[i])
                batches += [part[j : j + bs] for j in range(0, len(part), bs)]
            self._epochs = {epoch: [batches[k] for k in rng.permutation(len(batches)).tolist()]}
        return self._epochs[epoch]

    def batch_at(self, step: int) -> list[int]:
        """The training texts of optimizer step ``step`` (0-based)."""
        return self.epoch_batches(step // self.batches_per_epoch)[step % self.batches_per_epoch]

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based): a linear warmup over the first ``warm`` =
        ceil(``warmup`` x planned) steps (step 0 at lr / warm, step warm - 1 at the peak), then a linear decay from
        the peak at step ``warm`` to lr / (planned - warm) at the last step, reaching 0 at ``planned`` (one past the
        last step trained), so that no step is spent at a rate of 0."""
        planned = self.state.planned_steps
        warm = max(1, math.ceil(self.settings.warmup * planned)) if self.settings.warmup > 0 else 0
        if step < warm:
            return self.settings.lr * (step + 1) / warm
        return self.settings.lr * max(0.0, (planned - step) / max(1, planned - warm))

    # -- one step ----------------------------------------------------------------------------------------
    def _fill_cache(self, idx: list[int]) -> None:
        import torch

        miss = self.cache.missing(idx)
        if not miss:
            return
        t0 = time.perf_counter()
        batch = collate([self.teacher_ids[i] for i in miss], self.teacher_pad_id, self.device)
        with torch.inference_mode(), autocast(self.precision, self.device):
            out = run(self.teacher, self.task, batch, self.pooling)
        values = out.pooled if out.pooled is not None else out.logits
        assert values is not None
        self.cache.put(miss, values.float().cpu().numpy(), [self.lengths[i] for i in miss])
        self.state.teacher_seconds += time.perf_counter() - t0

    def _step(self, step: int) -> float:
        import torch

        s = self.settings
        idx = self.batch_at(step)
        self._fill_cache(idx)
        torch.manual_seed(s.seed * 1_000_003 + step)  # dropout: the same random numbers after a resume
        batch = collate([self.ids[i] for i in idx], self.pad_id, self.device)
        width = batch["input_ids"].shape[1]
        target = torch.from_numpy(self.cache.get(idx, width)).to(self.device)
        hidden = s.hidden_weight > 0
        with autocast(self.precision, self.device):
            out = run(self.student, self.task, batch, self.pooling, hidden=hidden)
        if self.task == FEATURE_EXTRACTION:
            assert out.pooled is not None
            loss, _ = losses.embedding_loss(out.pooled, target, s.mse_weight, s.cosine_weight)
            if s.relation_weight > 0:
                loss = loss + s.relation_weight * losses.relation_loss(out.pooled, target, s.relation_temperature)
        elif self.task == TEXT_CLASSIFICATION:
            assert out.logits is not None
            labels = self.labels[idx].to(self.device) if self.has_labels else None
            loss, _ = losses.classification_loss(out.logits, target, labels, s.temperature, s.kl_weight, s.ce_weight)
        else:
            assert out.logits is not None
            loss, _ = losses.token_loss(out.logits, target, batch["attention_mask"], s.temperature, s.kl_weight)
        if hidden:
            t0 = time.perf_counter()
            with torch.no_grad(), autocast(self.precision, self.device):
                t_out = run(self.teacher, self.task, batch, self.pooling, hidden=True)
            self.state.teacher_seconds += time.perf_counter() - t0
            assert out.hidden_states is not None and t_out.hidden_states is not None
            h = losses.hidden_loss(out.hidden_states, t_out.hidden_states, self.layer_map, batch["attention_mask"])
            loss = loss + s.hidden_weight * h
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, s.clip_norm)
        self.optimizer.step()
        return float(loss.detach())

    # -- checkpoints -------------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write the resume checkpoint (trainable weights, AdamW state, teacher cache, state) atomically."""
        from safetensors.torch import save_file

        new = self.work / (RESUME_DIR + ".new")
        shutil.rmtree(new, ignore_errors=True)
        new.mkdir(parents=True)
        params = dict(self.student.named_parameters())
        save_file({n: params[n].detach().cpu().contiguous() for n in self.trainable}, str(new / "student.safetensors"))
        opt = self.optimizer.state_dict()
        tensors = {
            f"{pid}.{key}": value.detach().cpu().contiguous()
            for pid, entry in opt["state"].items()
            for key, value in entry.items()
            if hasattr(value, "detach")
        }
        save_file(tensors, str(new / "optimizer.safetensors"))
        self.cache.save(new / "teacher_cache.safetensors", self.state.fingerprint)
        clock = getattr(self, "_budget_clock", None)
        if clock is not None:  # (earlier runs' seconds, when this command started)
            self.state.budget_seconds = clock[0] + time.monotonic() - clock[1]
        state = {**asdict(self.state), "param_groups": opt["param_groups"]}
        (new / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        final, old = self.work / RESUME_DIR, self.work / (RESUME_DIR + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        new.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        log.debug("resume checkpoint at step %d written to %s", self.state.step, final)
        return final

    def load(self, folder: Path) -> None:
        """Continue from the resume checkpoint in ``folder``."""
        import torch
        from safetensors.torch import load_file

        raw = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        groups = raw.pop("param_groups")
        state = TrainState(**raw)
        if state.fingerprint != self.state.fingerprint:
            raise DistillError(f"{folder} belongs to another distillation run; start over with --restart")
        weights = load_file(str(folder / "student.safetensors"), device=str(self.device))
        if sorted(weights) != sorted(self.trainable):
            raise DistillError(f"{folder} does not hold this student's trainable weights; start over with --restart")
        with torch.no_grad():
            params = dict(self.student.named_parameters())
            for name, value in weights.items():
                params[name].copy_(value)
        tensors = load_file(str(folder / "optimizer.safetensors"))
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            pid, name = key.split(".", 1)
            opt_state.setdefault(int(pid), {})[name] = value
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        self.cache.load(folder / "teacher_cache.safetensors", state.fingerprint)
        self.state = state
        log.info("resuming at step %d of %d from %s", state.step, state.planned_steps, folder)

    # -- the loop ----------------------------------------------------------------------------------------
    def _replan(self, step: int, started: float, first_step: int, deadline: float) -> None:
        """Fit the planned steps to the time left, at the pace of the recent steps (since the last replan).

        The plan shrinks when the steps are slower than the time left allows and grows back (never beyond the
        steps the recipe asks for) when they get faster, e.g. once another job on the machine has finished.
        """
        done = step - first_step
        if done < 1:
            return
        now = time.monotonic()
        last = getattr(self, "_pace_mark", None)
        if last is not None and step - last[0] >= 5:
            per_step = (now - last[1]) / (step - last[0])
        else:
            per_step = (now - started) / done
        self._pace_mark = (step, now)
        fit = step + int((deadline - now) / per_step) - SAVE_RESERVE_STEPS
        new = min(self.full_plan, max(step + 1, fit))
        if new != self.state.planned_steps and abs(new - self.state.planned_steps) >= 0.02 * self.state.planned_steps:
            log.info(
                "time budget: %.2f s per step, so %d steps instead of %d (the learning rate decays to 0 by then)",
                per_step,
                new,
                self.state.planned_steps,
            )
            self.state.planned_steps = new

    def train(
        self, deadline: float | None = None, on_step: StepCallback | None = None, clock_start: float | None = None
    ) -> dict[str, Any]:
        """Run (or continue) training until the planned steps are done or ``deadline`` (``time.monotonic()``)
        passes; ``on_step(step, loss)`` is called after every step. ``clock_start`` (``time.monotonic()``, by
        default now) is when this run's share of the time budget began: checkpoints add the time since then to
        :attr:`TrainState.budget_seconds`, which a resumed run subtracts from its budget. Returns the training
        summary."""
        self._budget_clock = (self.state.budget_seconds, time.monotonic() if clock_start is None else clock_start)
        self.student.train()
        if self.settings.dropout is not None:
            set_dropout(self.student, self.settings.dropout)
        self.teacher.eval()
        self.state.runs += 1
        first = self.state.step
        started = time.monotonic()
        stopped_by = "steps"
        bar = _progress(self.state.planned_steps, first)
        last_log = time.monotonic()
        restore = self._defer_ctrl_c()
        mid_step = False
        try:
            step = first
            while step < self.state.planned_steps:
                if self._ctrl_c:
                    raise KeyboardInterrupt
                if deadline is not None:
                    if step - first == REPLAN_FIRST or (step - first > REPLAN_FIRST and step % REPLAN_EVERY == 0):
                        self._replan(step, started, first, deadline)
                        if bar is not None:
                            bar.total = self.state.planned_steps
                    if time.monotonic() > deadline:
                        stopped_by = "time budget"
                        log.warning("time budget reached at step %d of %d", step, self.state.planned_steps)
                        break
                t0 = time.perf_counter()
                mid_step = True  # weights, moments and the step count change together, or not at all
                loss = self._step(step)
                self.state.train_seconds += time.perf_counter() - t0
                self.state.losses.append(loss)
                step += 1
                self.state.step = step
                mid_step = False
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.lr_at(step - 1):.1e}", refresh=False)
                elif time.monotonic() - last_log > 30 or step == self.state.planned_steps or step == first + 1:
                    last_log = time.monotonic()
                    rate = (time.monotonic() - started) / (step - first)
                    log.info(
                        "step %d/%d  loss %.4f (mean of last 20: %.4f)  %.2f s/step  ETA %s",
                        step,
                        self.state.planned_steps,
                        loss,
                        float(np.mean(self.state.losses[-20:])),
                        rate,
                        _duration(rate * (self.state.planned_steps - step)),
                    )
                if step % self.settings.checkpoint_every == 0 and step < self.state.planned_steps:
                    self.save()
                if on_step is not None:
                    on_step(step, loss)
        except KeyboardInterrupt:
            if mid_step:  # a second Ctrl-C inside an update: the step is half applied, keep the last checkpoint
                log.warning("stopped inside step %d: the same command resumes from the last checkpoint", step + 1)
                raise
            self.save()
            log.warning("interrupted after step %d: run the same command again to resume", self.state.step)
            raise
        finally:
            restore()
            if bar is not None:
                bar.close()
        self.save()
        self.student.eval()
        return self.summary(stopped_by)

    def _defer_ctrl_c(self) -> Callable[[], None]:
        """Make Ctrl-C stop training between steps, so that the checkpoint it writes holds whole steps (AdamW
        changes moments and weights in several operations); a second Ctrl-C stops at once, without writing.
        Only in the main thread (where signals are handled); returns the function that restores the handler."""
        self._ctrl_c = False
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def note(signum: int, frame: Any) -> None:
            if self._ctrl_c:
                raise KeyboardInterrupt
            self._ctrl_c = True
            log.warning("Ctrl-C: stopping after this step and saving it (Ctrl-C again: stop now, without saving)")

        previous = signal.signal(signal.SIGINT, note)
        return lambda: signal.signal(signal.SIGINT, previous)

    def summary(self, stopped_by: str = "steps") -> dict[str, Any]:
        """Steps, losses and times, for the report."""
        ls = self.state.losses
        k = max(1, min(20, len(ls) // 5))
        curve_every = max(1, len(ls) // 50)
        return {
            "steps": self.state.step,
            "planned_steps": self.state.planned_steps,
            "stopped_by": stopped_by,
            "epochs": round(self.state.step / self.batches_per_epoch, 3),
            "texts_seen_by_teacher": self.cache.filled,
            "loss_first": float(np.mean(ls[:k])) if ls else None,
            "loss_last": float(np.mean(ls[-k:])) if ls else None,
            "loss_curve": [round(float(np.mean(ls[i : i + curve_every])), 5) for i in range(0, len(ls), curve_every)],
            "train_seconds": round(self.state.train_seconds, 1),
            "teacher_seconds": round(self.state.teacher_seconds, 1),
            "seconds_per_step": round(self.state.train_seconds / max(1, len(ls)), 3),
            "runs": self.state.runs,
            "precision": self.precision,
            "trainable_parameters": sum(p.numel() for p in self.student.parameters() if p.requires_grad),
        }


def untrained_summary(precision: str) -> dict[str, Any]:
    """The training summary of a run with ``--steps 0`` (evaluation only), in :meth:`Trainer.summary`'s shape."""
    return {
        "steps": 0,
        "planned_steps": 0,
        "stopped_by": "--steps 0 (evaluation only)",
        "epochs": 0.0,
        "texts_seen_by_teacher": 0,
        "loss_first": None,
        "loss_last": None,
        "loss_curve": [],
        "train_seconds": 0.0,
        "teacher_seconds": 0.0,
        "seconds_per_step": 0.0,
        "runs": 0,
        "precision": precision,
        "trainable_parameters": 0,
    }


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _progress(total: int, initial: int) -> Any:
    """A tqdm bar on a terminal; None otherwise (progress then goes to the log)."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc="distill", unit="step", dynamic_ncols=True)
