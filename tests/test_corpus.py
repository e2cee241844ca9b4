"""The corpus split (``mbert_edge_export.corpus``) on the installed ``dataset-build`` text: one split per
folder whatever code reads it, and a user's copy of corpus text keeps the split of the text it copies."""

from __future__ import annotations

import hashlib

from mbert_edge_export import corpus

from .conftest import dataset_dir


def test_codes_of_one_folder_hold_out_the_same_paragraphs():
    dataset_dir()  # skips without the corpus
    assert corpus.split_code("no") == corpus.split_code("nb") == "nb"
    assert corpus.split_code("de") == "de" and corpus.split_code("user") == "user"
    assert [p.text for p in corpus.paragraphs("no")] == [p.text for p in corpus.paragraphs("nb")]
    held_no = [p.text for p in corpus.held_out_paragraphs("no")]
    assert held_no and held_no == [p.text for p in corpus.held_out_paragraphs("nb")]
    # hashed as "no" the folder would split otherwise: most of those paragraphs are "nb" training text
    as_no = {
        p.text
        for p in corpus.paragraphs("no")
        if int.from_bytes(hashlib.sha256(f"no\x00{p.text}".encode()).digest()[:4], "big") % 100 < 10
    }
    assert as_no != set(held_no)


def test_split_of_follows_the_paragraph_a_text_comes_from():
    dataset_dir()
    held = corpus.held_out_paragraphs("de")[0].text
    train = corpus.train_paragraphs("de")[0].text
    assert corpus.split_of(held) is True and corpus.split_of(f"  {held}\n") is True
    assert corpus.split_of(train) is False
    sentence = next(s for p in corpus.held_out_paragraphs("fr") for s in corpus.sentences(p.text))
    assert corpus.split_of(sentence) is True  # a sentence of a held-out paragraph is held out too
    assert corpus.split_of("a text that is in no corpus file, written for this test") is None
