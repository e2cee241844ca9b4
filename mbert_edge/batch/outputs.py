"""Output schema, part files (Parquet, JSONL, CSV) and the merge into one file.

Columns: ``row_id`` (int64), the id column when given, kept columns, the task's result, ``error`` (null when
the row was scored):

* text-classification, ``top_k=1``: ``label`` (string), ``score`` (float32); otherwise ``labels`` and
  ``scores`` (lists, best first);
* token-classification: ``entities``, a list of structs (entity_group, score, word, start, end);
* feature-extraction: ``embedding``, a fixed-size list of float32.

JSONL parts hold one JSON object per row; CSV parts write lists and structs as JSON text in their cell.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION

OUTPUT_FORMATS = ("parquet", "jsonl", "csv")
EXTENSIONS = {"parquet": "parquet", "jsonl": "jsonl", "csv": "csv"}
STATS_KEY = b"mbert_edge.batch.stats"  # per-part counts in a Parquet part's metadata (for recovery)


def result_columns(task: str, top_k: int | None) -> list[str]:
    """Names of the result columns for a task."""
    if task == FEATURE_EXTRACTION:
        return ["embedding"]
    if task == TEXT_CLASSIFICATION:
        return ["label", "score"] if top_k == 1 else ["labels", "scores"]
    return ["entities"]


def entity_type() -> Any:
    """The arrow type of one entity."""
    import pyarrow as pa

    return pa.struct(
        [
            ("entity_group", pa.string()),
            ("score", pa.float32()),
            ("word", pa.string()),
            ("start", pa.int32()),
            ("end", pa.int32()),
        ]
    )


def output_schema(
    task: str, top_k: int | None, dim: int | None, id_column: str | None, keep_types: dict[str, Any]
) -> Any:
    """The arrow schema every part of the job has."""
    import pyarrow as pa

    fields: list[tuple[str, Any]] = [("row_id", pa.int64())]
    fields += [(name, t) for name, t in keep_types.items() if name == id_column]
    fields += [(name, t) for name, t in keep_types.items() if name != id_column]
    if task == FEATURE_EXTRACTION:
        fields.append(("embedding", pa.list_(pa.float32(), dim)))
    elif task == TEXT_CLASSIFICATION and top_k == 1:
        fields += [("label", pa.string()), ("score", pa.float32())]
    elif task == TEXT_CLASSIFICATION:
        fields += [("labels", pa.list_(pa.string())), ("scores", pa.list_(pa.float32()))]
    else:
        fields.append(("entities", pa.list_(entity_type())))
    fields.append(("error", pa.string()))
    names = [n for n, _ in fields]
    if len(set(names)) != len(names):
        raise ValueError(f"output columns collide: {names}; rename the id or kept column")
    return pa.schema(fields)


def build_table(
    schema: Any,
    task: str,
    top_k: int | None,
    first_row: int,
    results: Sequence[Any],
    errors: Sequence[str | None],
    ids: Any,
    id_column: str | None,
    keep: dict[str, Any],
) -> Any:
    """One shard's table: ``results[i]`` is the predictor's result for row i (None for error rows)."""
    import numpy as np
    import pyarrow as pa

    n = len(errors)
    cols: dict[str, Any] = {"row_id": pa.array(np.arange(first_row, first_row + n, dtype=np.int64))}
    if id_column:
        cols[id_column] = ids
    cols.update(keep)
    if task == FEATURE_EXTRACTION:
        dim = schema.field("embedding").type.list_size
        flat = np.zeros((n, dim), dtype=np.float32)
        ok = np.array([r is not None for r in results], dtype=bool)
        for i in np.flatnonzero(ok):
            flat[i] = results[i]
        values = pa.array(flat.reshape(-1))
        cols["embedding"] = pa.FixedSizeListArray.from_arrays(values, dim, mask=pa.array(~ok))
    elif task == TEXT_CLASSIFICATION and top_k == 1:
        cols["label"] = [r["label"] if r is not None else None for r in results]
        cols["score"] = [r["score"] if r is not None else None for r in results]
    elif task == TEXT_CLASSIFICATION:
        cols["labels"] = [[x["label"] for x in r] if r is not None else None for r in results]
        cols["scores"] = [[x["score"] for x in r] if r is not None else None for r in results]
    else:
        cols["entities"] = list(results)
    cols["error"] = list(errors)
    arrays = []
    for f in schema:
        c = cols[f.name]
        if isinstance(c, (pa.Array, pa.ChunkedArray)):
            arrays.append(c if c.type == f.type else c.cast(f.type))
        else:
            arrays.append(pa.array(c, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _json_cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return value


def csv_header(schema: Any) -> bytes:
    """The CSV header line of the job's parts."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(schema.names)
    return buf.getvalue().encode("utf-8")


def write_part(table: Any, path: Path, fmt: str, stats: dict[str, Any]) -> None:
    """Write ``table`` to ``path`` in ``fmt`` and fsync it (the caller renames it into place)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        meta = dict(table.schema.metadata or {})
        meta[STATS_KEY] = json.dumps(stats).encode()
        pq.write_table(table.replace_schema_metadata(meta), path)
    else:
        rows = table.to_pylist()
        with open(path, "w", encoding="utf-8", newline="") as f:
            if fmt == "jsonl":
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                f.write(csv_header(table.schema).decode("utf-8"))
                w = csv.writer(f, lineterminator="\n")
                for row in rows:
                    w.writerow([_json_cell(row[c]) for c in table.schema.names])
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def read_part_errors(path: Path, fmt: str) -> tuple[int, int, int | None]:
    """(rows, rows with an error, truncated texts or None when unknown) of a committed part."""
    if fmt == "parquet":
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        table = pf.read(columns=["error"])
        stats = json.loads((pf.schema_arrow.metadata or {}).get(STATS_KEY, b"{}"))
        return table.num_rows, int(pc.sum(pc.is_valid(table.column("error"))).as_py() or 0), stats.get("truncated")
    rows = errors = 0
    with open(path, encoding="utf-8", newline="") as f:
        if fmt == "jsonl":
            for line in f:
                rows += 1
                errors += json.loads(line).get("error") is not None
        else:
            for rec in csv.DictReader(f):
                rows += 1
                errors += bool(rec.get("error"))
    return rows, errors, None


def merge_parts(parts: Sequence[Path], target: Path, fmt: str, schema: Any) -> None:
    """Concatenate the parts, in order, into ``target`` (written in full and fsynced; the caller renames it)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetWriter(target, schema.remove_metadata()) as writer:
            for p in parts:
                pf = pq.ParquetFile(p)
                for g in range(pf.num_row_groups):
                    writer.write_table(pf.read_row_group(g).replace_schema_metadata(None))
    else:
        header = csv_header(schema)
        with open(target, "wb") as out:
            if fmt == "csv":
                out.write(header)
            for p in parts:
                with open(p, "rb") as f:
                    if fmt == "csv":
                        f.seek(len(header))
                    shutil.copyfileobj(f, out, 1 << 20)
    with open(target, "rb") as f:
        os.fsync(f.fileno())
