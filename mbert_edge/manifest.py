"""The bundle schema (format v1): what ``manifest.json`` holds, read by the runtime and written by export.

The manifest is plain JSON so that any language can read a bundle. This module owns its shape: the
dataclasses below, their conversion from and to dicts, and the validation that turns a malformed
manifest into a :class:`~mbert_edge.errors.BundleFormatError` instead of a ``KeyError`` later on.
See ``docs/bundle-format.md`` for the human-readable description.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mbert_edge.errors import BundleFormatError, UnsupportedFormatVersionError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

TEXT_CLASSIFICATION = "text-classification"
TOKEN_CLASSIFICATION = "token-classification"
FEATURE_EXTRACTION = "feature-extraction"
TASKS = (TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION, FEATURE_EXTRACTION)

POOLINGS = ("mean", "cls")
#: a label id as the manifest spells it: a plain decimal integer, no sign, no leading zero
LABEL_ID = re.compile(r"0|[1-9][0-9]*")
SCORE_FUNCTIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class ShapeProfile:
    """One optimization profile of a TensorRT file: the (batch, sequence) shape every input takes at least
    (``min``), typically (``opt``: what TensorRT tunes its kernels for) and at most (``max``)."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def admits(self, batch: int, sequence: int) -> bool:
        """Whether a batch x sequence input lies inside this profile."""
        return self.min[0] <= batch <= self.max[0] and self.min[1] <= sequence <= self.max[1]


@dataclass(frozen=True)
class EngineSpec:
    """What a prebuilt TensorRT engine in a bundle (a file of role ``engine``) was built for: the runtime uses it
    only where these fit the device (:func:`mbert_edge.backends.tensorrt_compat.prebuilt_engine_mismatches`)."""

    gpu: str  # the GPU's name as CUDA reports it, e.g. "Orin" or "NVIDIA GeForce RTX 4090"
    compute_capability: str  # "major.minor", e.g. "8.7"
    tensorrt: str  # the TensorRT version that built it, e.g. "10.3.0"
    #: TensorRT's ``HardwareCompatibilityLevel`` member name: "NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY"
    hardware_compatibility_level: str
    profiles: tuple[ShapeProfile, ...]  # the optimization profiles it was built with
    source_sha256: str | None = None  # SHA-256 of the ONNX file it was built from (its ``source``)
    optimization_level: int | None = None  # TensorRT's builder optimization level (8.6+), for people

    def compute_capability_tuple(self) -> tuple[int, int]:
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle with its checksum; model files also say how they are run."""

    path: str
    #: "model", "weights" (a model's external tensor data), "tokenizer" (``tokenizer.json``), "tokenizer-sentencepiece"
    #: (``tokenizer.model``, the same tokenizer for SentencePiece) or "engine" (a prebuilt TensorRT engine)
    role: str
    size: int
    sha256: str
    backend: str | None = None  # model files: the runtime family that runs it, e.g. "onnxruntime"
    precision: str | None = None  # model files: "fp32", later "int8", "fp16", ...
    format: str | None = None  # model files: "onnx", later "tensorrt-plan"
    quantization: str | None = None  # int8 model files: "dynamic" (ONNX Runtime integer ops) or "static-qdq"
    external_data: str | None = None  # model files: path of the "weights" file that holds its tensors
    #: model files: True when a text's result does not depend on the other texts of its batch or on the
    #: padding width (fp32, static INT8, dynamic INT8 with fixed activation ranges); False for dynamic INT8
    #: with per-batch ranges; None when unknown (bundles written before this field)
    batch_invariant: bool | None = None
    #: TensorRT files (backend "tensorrt"): the optimization profiles its engines are built with
    profiles: tuple[ShapeProfile, ...] | None = None
    #: TensorRT files: the oldest TensorRT version that builds it as intended, e.g. "8.6"
    min_tensorrt: str | None = None
    #: prebuilt engines (role "engine"): the path of the model file it was built from
    source: str | None = None
    #: prebuilt engines: the device and TensorRT it was built for
    engine: EngineSpec | None = None
    #: "tokenizer-sentencepiece" files: the vocabulary ids of the tokens the template adds and of the unknown and
    #: padding tokens, {"bos": 0, "eos": 2, "unk": 3, "pad": 1}
    special_ids: dict[str, int] | None = None
    #: "tokenizer-sentencepiece" files: a regular expression (Python ``re``) matching the texts that must be read with
    #: tokenizer.json instead (those the two tokenizers read differently)
    fallback_pattern: str | None = None


@dataclass(frozen=True)
class EmbeddingSpec:
    """How token states become a sentence embedding, and the text prefix the model expects."""

    dim: int
    pooling: str = "mean"
    normalize: bool = True
    default_prefix: str = ""
    prefixes: dict[str, str] = field(default_factory=dict)  # named prompts, e.g. {"query": "query: "}


@dataclass
class Manifest:
    """Everything the runtime needs to know about a bundle, plus provenance and the fidelity report."""

    task: str
    max_length: int
    inputs: list[str]
    outputs: list[str]
    files: list[FileEntry]
    labels: dict[int, str] | None = None
    score_function: str | None = None
    embedding: EmbeddingSpec | None = None
    source: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    fidelity: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    # ------------------------------------------------------------------ queries
    def model_files(self) -> list[FileEntry]:
        """The files with role "model", in manifest order."""
        return [f for f in self.files if f.role == "model"]

    def engine_files(self, model: FileEntry | None = None) -> list[FileEntry]:
        """The prebuilt TensorRT engines (role "engine"), in manifest order; of ``model`` only when given."""
        return [f for f in self.files if f.role == "engine" and (model is None or f.source == model.path)]

    def files_of(self, model: FileEntry) -> list[FileEntry]:
        """``model`` and the weights file it reads its tensors from (what must be verified to run it)."""
        if model.external_data is None:
            return [model]
        for f in self.files:
            if f.path == model.external_data and f.role == "weights":
                return [model, f]
        raise BundleFormatError(f"{model.path} names weights {model.external_data!r} that the manifest does not list")

    def tokenizer_file(self) -> FileEntry:
        """The bundled ``tokenizer.json`` entry."""
        for f in self.files:
            if f.role == "tokenizer":
                return f
        raise BundleFormatError("the manifest lists no tokenizer file; re-export the bundle")

    def sentencepiece_file(self) -> FileEntry | None:
        """The bundled ``tokenizer.model`` entry (the tokenizer for SentencePiece), if any."""
        return next((f for f in self.files if f.role == "tokenizer-sentencepiece"), None)

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, keys in a stable order (format version first)."""
        d = asdict(self)
        out: dict[str, Any] = {"format_version": d.pop("format_version")}
        out.update(d)
        if self.labels is not None:
            out["labels"] = {str(k): v for k, v in sorted(self.labels.items())}
        out["files"] = [{k: _drop_none(v) for k, v in f.items() if v is not None} for f in d["files"]]
        return out

    def to_json(self) -> str:
        """The manifest as pretty-printed JSON text."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """Validate a parsed ``manifest.json`` and build a :class:`Manifest` from it."""
        if not isinstance(d, dict):
            raise BundleFormatError("manifest.json must hold a JSON object; the bundle is damaged, re-export it")
        version = d.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise BundleFormatError("manifest.json has no integer 'format_version'; the bundle is damaged")
        if version > FORMAT_VERSION:
            raise UnsupportedFormatVersionError(
                f"bundle format {version} is newer than this mbert-edge understands (up to {FORMAT_VERSION}); "
                "upgrade with `pip install -U mbert-edge` or re-export the bundle with this version"
            )
        if version < 1:
            raise BundleFormatError(f"bundle format {version} is not a valid version")
        try:
            task = _typed(d, "task", str)
            if task not in TASKS:
                raise BundleFormatError(f"unknown task {task!r} in manifest; expected one of {', '.join(TASKS)}")
            max_length = _typed(d, "max_length", int)
            if max_length < 2:
                raise BundleFormatError(f"max_length {max_length} is too small")
            inputs = _str_list(d, "inputs")
            outputs = _str_list(d, "outputs")
            files = [_file_entry(x) for x in _typed(d, "files", list)]
            labels = None
            if d.get("labels") is not None:
                raw = _typed(d, "labels", dict)
                if not all(isinstance(v, str) for v in raw.values()):
                    raise BundleFormatError("manifest key 'labels' must map label ids to str names")
                for k in raw:  # "01" and "1" would both be id 1: only the plain decimal spelling
                    if not LABEL_ID.fullmatch(k):
                        raise BundleFormatError(
                            f"manifest.json does not follow the bundle schema: label id '{k}' is not an integer"
                        )
                labels = {int(k): v for k, v in raw.items()}
                if sorted(labels) != list(range(len(labels))):
                    raise BundleFormatError(
                        f"manifest key 'labels' must number the labels 0 to {len(labels) - 1}, one per logit column; "
                        f"got ids {sorted(labels)}"
                    )
            score_function = _optional(d, "score_function", str)
            if score_function is not None and score_function not in SCORE_FUNCTIONS:
                raise BundleFormatError(f"unknown score_function {score_function!r}")
            embedding = None
            if d.get("embedding") is not None:
                e = _typed(d, "embedding", dict)
                prefixes = _optional(e, "prefixes", dict) or {}
                if not all(isinstance(v, str) for v in prefixes.values()):
                    raise BundleFormatError("manifest key 'prefixes' must map names to str prompts")
                embedding = EmbeddingSpec(
                    dim=_typed(e, "dim", int),
                    pooling=_optional(e, "pooling", str, "mean"),
                    normalize=_optional(e, "normalize", bool, True),
                    default_prefix=_optional(e, "default_prefix", str, ""),
                    prefixes=dict(prefixes),
                )
                if embedding.dim < 1:
                    raise BundleFormatError(f"embedding dim {embedding.dim} must be positive")
                if embedding.pooling not in POOLINGS:
                    raise BundleFormatError(f"unknown pooling {embedding.pooling!r}; expected mean or cls")
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            if isinstance(exc, BundleFormatError):
                raise
            raise BundleFormatError(f"manifest.json does not follow the bundle schema: {exc}") from exc
        if task in (TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION) and not labels:
            raise BundleFormatError(f"a {task} manifest needs 'labels'")
        if task == FEATURE_EXTRACTION and embedding is None:
            raise BundleFormatError("a feature-extraction manifest needs 'embedding'")
        if not any(f.role == "model" for f in files):
            raise BundleFormatError("the manifest lists no model file")
        models = {f.path for f in files if f.role == "model"}
        for f in files:
            if f.role == "engine" and (f.engine is None or f.source not in models):
                raise BundleFormatError(
                    f"engine file {f.path} needs 'engine' (what it was built for) and a 'source' naming a listed model "
                    f"file (it names {f.source!r}); the bundle is damaged, rebuild the engine with "
                    "`mbert-edge build-engine BUNDLE --add-to-bundle`"
                )
        weights = {f.path for f in files if f.role == "weights"}
        for f in files:
            if f.external_data is not None and f.external_data not in weights:
                raise BundleFormatError(
                    f"model file {f.path} names weights {f.external_data!r} that the manifest does not list "
                    "as a weights file; the bundle is damaged, re-export it"
                )
        return cls(
            task=task,
            max_length=max_length,
            inputs=inputs,
            outputs=outputs,
            files=files,
            labels=labels,
            score_function=score_function,
            embedding=embedding,
            source=_optional(d, "source", dict) or {},
            export=_optional(d, "export", dict) or {},
            fidelity=_optional(d, "fidelity", dict) or {},
            format_version=version,
        )

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        """Read and validate a ``manifest.json`` file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
            data = json.loads(text)
        except UnicodeDecodeError as exc:
            raise BundleFormatError(f"{path} is not UTF-8 text; the bundle is damaged, re-export it") from exc
        except json.JSONDecodeError as exc:
            raise BundleFormatError(
                f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); the bundle is truncated or "
                "damaged, re-export it"
            ) from exc
        return cls.from_dict(data)

    def write(self, path: str | Path) -> None:
        """Write this manifest as JSON."""
        Path(path).write_text(self.to_json(), encoding="utf-8")


def _typed(d: dict[str, Any], key: str, typ: type) -> Any:
    if key not in d:
        raise BundleFormatError(f"manifest.json lacks the required key {key!r}; the bundle is damaged")
    value = d[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise BundleFormatError(f"manifest key {key!r} must be a {typ.__name__}, not {type(value).__name__}")
    return value


def _str_list(d: dict[str, Any], key: str) -> list[str]:
    value = _typed(d, key, list)
    if not value or not all(isinstance(x, str) for x in value):
        raise BundleFormatError(f"manifest key {key!r} must be a non-empty list of names")
    return list(value)


def _file_entry(x: Any) -> FileEntry:
    if not isinstance(x, dict):
        raise BundleFormatError("each entry of 'files' must be an object")
    path = _typed(x, "path", str)
    if Path(path).is_absolute() or ".." in Path(path).parts:
        raise BundleFormatError(f"file path {path!r} escapes the bundle directory")
    size = _typed(x, "size", int)
    if size < 0:
        raise BundleFormatError(f"file {path!r} has a negative size {size}")
    return FileEntry(
        path=path,
        role=_typed(x, "role", str),
        size=size,
        sha256=_typed(x, "sha256", str),
        backend=_optional(x, "backend", str),
        precision=_optional(x, "precision", str),
        format=_optional(x, "format", str),
        quantization=_optional(x, "quantization", str),
        external_data=_optional(x, "external_data", str),
        batch_invariant=_optional_bool(x, "batch_invariant"),
        profiles=_profiles(x.get("profiles")),
        min_tensorrt=None if x.get("min_tensorrt") is None else str(x["min_tensorrt"]),
        source=_optional(x, "source", str),
        engine=_engine_spec(x.get("engine")),
        special_ids=_special_ids(x.get("special_ids")),
        fallback_pattern=_optional(x, "fallback_pattern", str),
    )


def _special_ids(value: Any) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in value.items()
    ):
        raise BundleFormatError(f"manifest key 'special_ids' must map token names to ids, not {value!r}")
    return dict(value)


def _engine_spec(value: Any) -> EngineSpec | None:
    """Parse a file entry's ``engine``: ``gpu``, ``compute_capability`` ("M.m"), ``tensorrt``,
    ``hardware_compatibility_level``, ``profiles``, optional ``source_sha256`` and ``optimization_level``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BundleFormatError(f"manifest key 'engine' must be an object, not {value!r}")
    cc = _typed(value, "compute_capability", str)
    if not re.fullmatch(r"\d+\.\d+", cc):
        raise BundleFormatError(f"engine compute_capability {cc!r} must be 'major.minor', e.g. '8.7'")
    tensorrt = _typed(value, "tensorrt", str)
    if not re.fullmatch(r"\d+\.\d+(\.\d+){0,2}", tensorrt):
        raise BundleFormatError(f"engine tensorrt {tensorrt!r} must be a version such as '10.3.0'")
    level = _typed(value, "hardware_compatibility_level", str)
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", level):
        raise BundleFormatError(
            f"engine hardware_compatibility_level {level!r} must be a TensorRT HardwareCompatibilityLevel name such "
            "as 'NONE' or 'AMPERE_PLUS'"
        )
    profiles = _profiles(_typed(value, "profiles", list))
    assert profiles is not None
    return EngineSpec(
        gpu=_typed(value, "gpu", str),
        compute_capability=cc,
        tensorrt=tensorrt,
        hardware_compatibility_level=level,
        profiles=profiles,
        source_sha256=_optional(value, "source_sha256", str),
        optimization_level=_optional(value, "optimization_level", int),
    )


def _drop_none(value: Any) -> Any:
    """A nested dict (a file's ``engine``) without its null keys, as the file entries themselves."""
    return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value


def _profiles(value: Any) -> tuple[ShapeProfile, ...] | None:
    """Parse a file entry's ``profiles``: a list of ``{"min": [b, s], "opt": [b, s], "max": [b, s]}``."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise BundleFormatError("manifest key 'profiles' must be a non-empty list of {min, opt, max} objects")
    out = []
    for p in value:
        try:
            shapes = {k: tuple(int(v) for v in p[k]) for k in ("min", "opt", "max")}
        except (TypeError, KeyError, ValueError) as exc:
            raise BundleFormatError(
                f"bad optimization profile {p!r}: needs min, opt and max as [batch, sequence]"
            ) from exc
        if any(len(s) != 2 or min(s) < 1 for s in shapes.values()) or not all(
            shapes["min"][i] <= shapes["opt"][i] <= shapes["max"][i] for i in range(2)
        ):
            raise BundleFormatError(f"bad optimization profile {p!r}: needs 1 <= min <= opt <= max, two dimensions")
        out.append(ShapeProfile(min=shapes["min"], opt=shapes["opt"], max=shapes["max"]))  # type: ignore[arg-type]
    return tuple(out)


def _optional(d: dict[str, Any], key: str, typ: type, default: Any = None) -> Any:
    """``d[key]`` when present and not null, which must then be a ``typ`` (bool is no int); else ``default``."""
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise BundleFormatError(f"manifest key {key!r} must be a {typ.__name__} or absent, not {value!r}")
    return value


def _optional_bool(d: dict[str, Any], key: str) -> bool | None:
    value = d.get(key)
    if value is not None and not isinstance(value, bool):
        raise BundleFormatError(f"manifest key {key!r} must be true, false or absent, not {value!r}")
    return value
