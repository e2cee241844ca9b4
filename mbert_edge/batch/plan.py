"""The job plan: its shards and a fingerprint of everything that decides the output, written atomically.

The fingerprint holds the mbert-edge version, the bundle (SHA-256 of its manifest, which pins every file's
checksum, and the model file chosen), the task options, the output format and schema, and each input's
path, size and modification time. A resume with another fingerprint is refused with the differences listed.
Worker and thread counts, the batch size and the engine are not in it: they change speed, not rows.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mbert_edge.batch.commit import PLAN_NAME, write_atomic
from mbert_edge.batch.errors import BatchError
from mbert_edge.batch.inputs import InputFile, Shard

PLAN_VERSION = 1


@dataclass(frozen=True)
class JobOptions:
    """What a worker needs to score a shard the same way every time (stored in the plan)."""

    bundle: str
    backend: str
    precision: str | None
    model_file: str
    task: str
    truncation: bool
    text_column: str
    id_column: str | None
    keep_columns: tuple[str, ...]
    top_k: int | None
    prefix: str | None
    normalize: bool | None
    output_format: str
    single_file: bool
    shard_rows: int


@dataclass
class JobPlan:
    """The plan of one job: options, fingerprint, shards and the output schema (arrow IPC, base64)."""

    options: JobOptions
    fingerprint: dict[str, Any]
    shards: list[Shard]
    schema_b64: str
    version: int = PLAN_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def schema(self) -> Any:
        """The arrow schema of every part."""
        import pyarrow as pa

        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.schema_b64)))

    @property
    def total_rows(self) -> int:
        """Rows in all inputs."""
        return sum(s.rows for s in self.shards)

    def to_json(self) -> str:
        """The plan file's text."""
        data = {
            "version": self.version,
            "fingerprint": self.fingerprint,
            "options": asdict(self.options),
            "schema": self.schema_b64,
            "total_rows": self.total_rows,
            "shards": [s.to_dict() for s in self.shards],
        }
        return json.dumps(data, indent=1, ensure_ascii=False) + "\n"

    def write(self, out: Path) -> None:
        """Write ``OUT_DIR/_job.json`` atomically."""
        write_atomic(out / PLAN_NAME, self.to_json().encode("utf-8"))

    @classmethod
    def read(cls, out: Path) -> JobPlan | None:
        """The plan in ``out``, or None when there is none."""
        path = out / PLAN_NAME
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            opts = data["options"]
            opts["keep_columns"] = tuple(opts["keep_columns"])
            return cls(
                JobOptions(**opts),
                data["fingerprint"],
                [Shard(**s) for s in data["shards"]],
                data["schema"],
                data["version"],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BatchError(f"{path} is not a readable job plan ({exc}); use --restart to start over") from exc


def encode_schema(schema: Any) -> str:
    """An arrow schema as base64 of its IPC form."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def bundle_digest(bundle: Path) -> str:
    """SHA-256 of the bundle's manifest.json (which pins every file's SHA-256)."""
    return hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()


def fingerprint(
    version: str, options: JobOptions, bundle_sha256: str, schema: Any, inputs: list[InputFile], input_format: str
) -> dict[str, Any]:
    """Everything that decides the job's rows and values."""
    return {
        "mbert_edge": version,
        "bundle": {
            "manifest_sha256": bundle_sha256,
            "task": options.task,
            "model_file": options.model_file,
            "backend": options.backend,
            "precision": options.precision,
        },
        "options": {
            "text_column": options.text_column,
            "id_column": options.id_column,
            "keep_columns": list(options.keep_columns),
            "top_k": options.top_k,
            "prefix": options.prefix,
            "normalize": options.normalize,
            "truncation": options.truncation,
            "input_format": input_format,
            "shard_rows": options.shard_rows,
        },
        "output": {
            "format": options.output_format,
            "single_file": options.single_file,
            "schema": ", ".join(f"{f.name}: {f.type}" for f in schema),
        },
        "inputs": [{"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns} for f in inputs],
    }


def _short(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
    return text if len(text) <= 80 else text[:77] + "..."


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, one readable line each."""
    lines: list[str] = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if a == b:
            continue
        if section == "inputs" and isinstance(a, list) and isinstance(b, list):
            before = len(lines)
            olds = {f["path"]: f for f in a}
            news = {f["path"]: f for f in b}
            for p in olds.keys() - news.keys():
                lines.append(f"inputs: {p} was an input, is not now")
            for p in news.keys() - olds.keys():
                lines.append(f"inputs: {p} is new")
            for p in olds.keys() & news.keys():
                for k in ("size", "mtime_ns"):
                    if olds[p][k] != news[p][k]:
                        lines.append(f"inputs: {p}: {k} {olds[p][k]} -> {news[p][k]}")
            if len(lines) == before and [f["path"] for f in a] != [f["path"] for f in b]:
                lines.append("inputs: the same files in another order")
        elif isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    lines.append(f"{section}.{k}: {_short(a.get(k))} -> {_short(b.get(k))}")
        else:
            lines.append(f"{section}: {_short(a)} -> {_short(b)}")
    return lines
