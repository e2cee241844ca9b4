"""The topic teacher's labelled training paragraphs as JSONL, for ``mbert-edge distill --data`` and the INT8 gate's
``--calibration`` (``make bench-topic``).

    .venv/bin/python benchmarks/topic_train_jsonl.py --langs en,de,fr,es,ru,zh > build/topic/topic-train.jsonl

One ``{"text": ..., "label": ...}`` line per paragraph of the training split of ``export/topics.py`` (the split
``examples/train_topic_classifier.py`` trains on), in the teacher's training languages: never a held-out
paragraph, which the benchmark scores.
"""

from __future__ import annotations

import argparse
import json
import sys

from mbert_edge_export import topics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--langs", default="en,de,fr,es,ru,zh", help="the teacher's training languages")
    args = ap.parse_args(argv)
    n = 0
    for lang in args.langs.split(","):
        for paragraph, label in topics.split(lang)[0]:
            print(json.dumps({"text": paragraph.text, "label": topics.TOPICS[label]}, ensure_ascii=False))
            n += 1
    print(f"{n} training paragraphs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
