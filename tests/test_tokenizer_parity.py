"""The bundled tokenizer.json gives the same ids as transformers' slow Python BertTokenizer (cased)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from mbert_edge.tokenizer import BundleTokenizer

try:
    from transformers import BertTokenizerLegacy as SlowBertTokenizer
except ImportError:  # transformers 4.x
    from transformers import BertTokenizer as SlowBertTokenizer

SCRIPTS = {
    "accented latin": "Ça va? Élève, naïve façade — Zürich, Łódź, Ærøskøbing, São Paulo, İstanbul, Ñandú.",
    "cyrillic": "Съешь же ещё этих мягких французских булок, да выпей чаю. Її Київ.",
    "greek": "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Άλφα, Ωμέγα.",
    "arabic": "نص حكيم له سر قاطع وذو شأن عظيم مكتوب على ثوب أخضر ومغلف بجلد أزرق",
    "hebrew": "דג סקרן שט בים מאוכזב ולפתע מצא חברה",
    "devanagari": "ऋषियों को सताने वाले दुष्ट राक्षसों के राजा रावण का सर्वनाश करने वाले विष्णुवतार भगवान श्रीराम",
    "thai": "เป็นมนุษย์สุดประเสริฐเลิศคุณค่า กว่าบรรดาฝูงสัตว์เดรัจฉาน",
    "cjk": "我能吞下玻璃而不伤身体。私はガラスを食べられます。それは私を傷つけません。",
    "korean": "키스의 고유조건은 입술끼리 만나야 하고 특별한 기술은 필요치 않다.",
    "emoji": "I ❤️ 🍕 and 🇨🇭 flags 👨‍👩‍👧 family 👍🏽 ok",
    "mixed": "Meeting @ 10:30 in Zürich/東京/القاهرة — cost: €1,234.56 (≈ $1.3k) #ml_2026",
    "whitespace": "  tabs\tand\nnew lines\r\n  non\u00a0breaking\u2003em-space zero\u200bwidth  ",
    "controls": "null\x00char bell\x07 replacement\ufffd soft\u00adhyphen",
    "decomposed": "e\u0301cole, n\u0303, A\u030a, Cafe\u0301",
    "compat": "ﬁ ligature, Ｆｕｌｌｗｉｄｔｈ, ① ½ ㎏ ℃",
    "long word": "Donaudampfschifffahrtsgesellschaftskapitänsmützenabzeichenherstellungsbetriebsleitungsbüro" * 2,
}


@pytest.fixture(scope="module")
def tokenizers_pair(bundles, checkpoints):
    ckpt = checkpoints["text-classification"]
    slow = SlowBertTokenizer(
        vocab_file=str(ckpt / "vocab.txt"), do_lower_case=False, strip_accents=None, tokenize_chinese_chars=True
    )
    fast = Tokenizer.from_file(str(bundles["text-classification"] / "tokenizer.json"))
    return slow, fast


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_bundled_tokenizer_matches_slow_python_tokenizer(tokenizers_pair, script):
    slow, fast = tokenizers_pair
    text = SCRIPTS[script]
    want = slow.encode(text, add_special_tokens=True)
    got = fast.encode(text).ids
    assert got == want
    if script == "long word":  # WordPiece gives up on words over 100 characters, in both implementations
        assert got == [slow.cls_token_id, slow.unk_token_id, slow.sep_token_id]
    else:  # the vocabulary really covers the script: not everything is [UNK]
        assert sum(1 for i in got if i == slow.unk_token_id) < len(got) - 2


def test_corpus_lines_in_21_languages_match(tokenizers_pair):
    from tests.conftest import corpus_lines

    slow, fast = tokenizers_pair
    lines = [line for _, line in corpus_lines(per_lang=15)]
    mismatched = [t for t in lines if fast.encode(t).ids != slow.encode(t, add_special_tokens=True)]
    assert not mismatched, mismatched[:3]


def test_truncation_and_offsets(bundles):
    tok = BundleTokenizer(bundles["token-classification"] / "tokenizer.json", max_length=16)
    text = "Zürich ist eine Stadt in der Schweiz und hat viele Einwohner aus aller Welt, sagt Anna."
    (enc,) = tok.encode([text])
    assert len(enc.ids) == 16 and enc.overflowing
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    for (start, end), special in zip(enc.offsets, enc.special_tokens_mask, strict=True):
        if not special:
            assert text[start:end].replace(" ", "") != ""
    batch = tok.pad(tok.encode(["kurz", text]))
    assert batch["input_ids"].shape == (2, 16)
    assert batch["attention_mask"][0].sum() < 16 and batch["attention_mask"][1].sum() == 16
    assert (batch["input_ids"][0][batch["attention_mask"][0] == 0] == tok.pad_id).all()
