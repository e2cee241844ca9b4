"""The mbert-edge command: export, predict, info; useful errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mbert_edge.cli import main


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbert_edge.cli", *args], capture_output=True, text=True, input=stdin)


def test_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    for cmd in ("export", "predict", "info"):
        assert cmd in out.stdout


def test_export_predict_info(tmp_path, checkpoints):
    bundle = tmp_path / "clf"
    out = run_cli("export", str(checkpoints["text-classification"]), "-o", str(bundle))
    assert out.returncode == 0, out.stderr
    assert "[4/4]" in out.stderr and "exported" in out.stdout

    out = run_cli("predict", str(bundle), "Hallo Welt", "Bonjour le monde", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["Hallo Welt", "Bonjour le monde"]
    assert rows[0]["result"]["label"] in ("negative", "neutral", "positive")

    inp = tmp_path / "texts.jsonl"
    inp.write_text('{"text": "eins"}\n\n{"text": "zwei"}\n', encoding="utf-8")
    out = run_cli("predict", str(bundle), "--input", str(inp), "--top-k", "0")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 2 and out.stdout.count("(") == 6

    out = run_cli("predict", str(bundle), stdin="один\nдва\n")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 2

    out = run_cli("info", str(bundle))
    assert out.returncode == 0, out.stderr
    assert "text-classification" in out.stdout and "checksums   OK" in out.stdout

    out = run_cli("export", str(checkpoints["text-classification"]), "-o", str(bundle))
    assert out.returncode == 1 and "--force" in out.stderr


def test_predict_embeddings_and_entities(bundles, capsys):
    assert main(["predict", str(bundles["feature-extraction"]), "hola", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert len(row["embedding"]) == 32
    assert main(["predict", str(bundles["token-classification"]), "Anna wohnt in Berlin"]) == 0
    assert "Anna wohnt in Berlin" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "/nonexistent/bundle"], "no bundle directory"),
        (["predict", "/nonexistent/bundle", "x"], "no bundle directory"),
        (["export", "/nonexistent/ckpt", "-o", "/tmp/unused-bundle"], "no checkpoint directory"),
        (["export", "some-org/not-cached-model", "-o", "/tmp/unused-bundle"], "local Hugging Face cache"),
    ],
)
def test_errors_exit_nonzero_with_message(args, message):
    out = run_cli(*args)
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") or "\nerror: " in out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_tampered_bundle_info_fails(copy_bundle):
    b = copy_bundle("feature-extraction")
    (b / "tokenizer.json").write_text("{}")
    out = run_cli("info", str(b))
    assert out.returncode == 1 and "truncated or changed" in out.stderr


def test_usage_error_exits_2():
    assert run_cli("predict").returncode == 2


def test_failed_gate_prints_its_report(tmp_path, checkpoints):
    out = run_cli(
        "export",
        str(checkpoints["feature-extraction"]),
        "-o",
        str(tmp_path / "b"),
        "--quantize",
        "dynamic",
        "--min-cosine",
        "1.01",
    )
    assert out.returncode == 1 and "even with" in out.stderr
    assert "INT8 accuracy gate: mean_cosine" in out.stderr and "sensitivity (each group" in out.stderr
    assert not (tmp_path / "b").exists()


def test_input_files_are_split_at_newlines_only(tmp_path):
    """A text may hold U+2028, U+0085 or a form feed (JSON writers leave U+2028 unescaped): one line, one
    text, as `score` reads it; a UTF-8 byte-order mark is not part of the first text."""
    import argparse

    from mbert_edge.cli import _read_texts

    txt = tmp_path / "in.txt"
    txt.write_text("a\x0cb\r\nc\u2028d\ne\n", encoding="utf-8-sig")
    assert _read_texts(argparse.Namespace(texts=[], input=txt)) == ["a\x0cb", "c\u2028d", "e"]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(json.dumps({"text": "x\u2028y"}, ensure_ascii=False) + "\n", encoding="utf-8-sig")
    assert _read_texts(argparse.Namespace(texts=[], input=jsonl)) == ["x\u2028y"]
