"""What the export stages share: the options, the loaded model, the staging directory and the report so far."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbert_edge.manifest import FileEntry
from mbert_edge_export import onnx_export, parity
from mbert_edge_export.quantize.calibration import TextSet
from mbert_edge_export.quantize.gated import QuantizeSettings
from mbert_edge_export.sources.base import LoadedSource
from mbert_edge_export.tensorrt import TensorRTSettings

log = logging.getLogger("mbert_edge_export.pipeline")

MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"


@dataclass
class ExportOptions:
    """Every setting of one export, as given by the caller (the CLI's flags)."""

    source: str
    output: Path
    task: str | None = None
    max_length: int | None = None
    opset: int = onnx_export.DEFAULT_OPSET
    tolerance: float = parity.DEFAULT_TOLERANCE
    force: bool = False
    # vocabulary trimming (stage trim_vocabulary)
    languages: list[str] | None = None
    vocab_sources: tuple[str, ...] = ("wordfreq", "dataset-build")
    vocab_corpus: tuple[Path, ...] = ()
    vocab_coverage: float | None = None
    max_vocab: int | None = None
    # INT8 (stage quantize)
    quantize: QuantizeSettings | None = None
    calibration_file: Path | None = None
    calibration_size: int = 128
    eval_size: int = 128
    keep_fp32: bool = False
    # TensorRT-ready files (stage tensorrt, --target tensorrt)
    tensorrt: TensorRTSettings | None = None
    # a distilled student's shipped files against its original teacher (stage teacher_fidelity)
    teacher_fidelity: bool = True

    @property
    def needs_text(self) -> bool:
        """Whether a stage calibrates or gates on text (INT8, or the TensorRT files' accuracy gate)."""
        return self.quantize is not None or self.tensorrt is not None


@dataclass
class ExportContext:
    """Passed through the stages; each reads what earlier ones left and adds its files and report section."""

    options: ExportOptions
    stage_dir: Path
    total_steps: int
    loaded: LoadedSource | None = None
    max_length: int = 0
    calibration: TextSet | None = None  # INT8 and TensorRT: calibration text
    held_out: TextSet | None = None  # INT8 and TensorRT: the accuracy gate's text, never calibrated on
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)  # model files, in the runtime's order of preference
    fidelity: dict[str, Any] = field(default_factory=dict)  # one section per stage
    settings: dict[str, Any] = field(default_factory=dict)  # manifest["export"]: what each stage did
    step_no: int = 0

    def step(self, what: str) -> None:
        """Log the start of a step as ``[n/total] what``."""
        self.step_no += 1
        log.info("[%d/%d] %s", self.step_no, self.total_steps, what)

    def path(self, name: str) -> Path:
        """A file in the staging directory."""
        return self.stage_dir / name
