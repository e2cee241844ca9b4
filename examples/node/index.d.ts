// Types of the public API of mbert-edge-node (index.mjs). The contract behind them: docs/bundle-format.md.

export declare const FORMAT_VERSION: 1;

export type Task = 'text-classification' | 'token-classification' | 'feature-extraction';

/** One file of the bundle, as listed in manifest.json. */
export interface FileEntry {
  path: string;
  role: 'model' | 'weights' | 'tokenizer' | string;
  size: number;
  sha256: string;
  backend?: string;
  precision?: 'fp32' | 'int8' | string;
  format?: string;
  quantization?: 'dynamic' | 'static-qdq' | string;
  external_data?: string;
  batch_invariant?: boolean;
}

export interface EmbeddingSpec {
  dim: number;
  pooling: 'mean' | 'cls';
  normalize: boolean;
  default_prefix: string;
  prefixes: Record<string, string>;
}

/** A validated manifest.json: its keys as in the file, labels keyed by integer id. */
export interface Manifest {
  format_version: number;
  task: Task;
  max_length: number;
  inputs: string[];
  outputs: string[];
  files: FileEntry[];
  labels: Map<number, string> | null;
  score_function: 'softmax' | 'sigmoid' | null;
  embedding: EmbeddingSpec | null;
  source: Record<string, unknown>;
  export: Record<string, unknown>;
  fidelity: Record<string, unknown>;
  [key: string]: unknown;
}

export interface LabelScore {
  label: string;
  score: number;
}

export interface Entity {
  entity_group: string;
  score: number;
  word: string;
  /** UTF-16 offsets into the text (`text.slice(start, end)`), or code points with `offsets: 'codepoint'` */
  start: number;
  end: number;
}

export interface TokenizedText {
  ids: number[];
  tokens: string[];
  /** [start, end] in code points, as Python's tokenizers gives them; null where the tokenizer gives none */
  offsets: Array<[number, number]> | null;
}

export interface LoadOptions {
  /** intra-op CPU threads for one call (default: ONNX Runtime's choice, the physical cores) */
  threads?: number | null;
  /** run the model file of this precision instead of the preferred one (INT8 first, then fp32) */
  precision?: 'fp32' | 'int8' | string | null;
  /** run this model file (its path in the manifest) */
  modelFile?: string | null;
  /** cut texts longer than max_length tokens at the end (default true); false: TextTooLongError */
  truncation?: boolean;
  /** hash the files it loads against the manifest (default true); sizes are always checked */
  verify?: boolean;
  /** receives the truncation warning (default: console) */
  logger?: { warn(message: string): void } | null;
}

export interface PredictOptions {
  /** labels per text: 1 (default) gives one {label, score}, k a list of the k best, null every label */
  topK?: number | null;
  batchSize?: number;
  /** entity offsets: 'utf16' (default, JavaScript string indices) or 'codepoint' (Python's numbers) */
  offsets?: 'utf16' | 'codepoint';
}

export interface EmbedOptions {
  /** L2-normalize (default: the manifest's `embedding.normalize`) */
  normalize?: boolean | null;
  /** put before every text (default: the manifest's `embedding.default_prefix`; '' for none) */
  prefix?: string | null;
  batchSize?: number;
}

export type ClassificationResult = LabelScore | LabelScore[];

export declare class Predictor {
  readonly manifest: Manifest;
  readonly modelFile: FileEntry;
  readonly path: string | null;
  readonly task: Task;
  /** label names in id order (empty for feature extraction) */
  readonly labels: string[];
  readonly embeddingDim: number;

  /** text-classification: {label, score} (or a list with topK); token-classification: entities */
  predict(text: string, options?: PredictOptions): Promise<ClassificationResult | Entity[]>;
  predict(texts: string[], options?: PredictOptions): Promise<Array<ClassificationResult | Entity[]>>;

  /** sentence embeddings, float32 */
  embed(text: string, options?: EmbedOptions): Promise<Float32Array>;
  embed(texts: string[], options?: EmbedOptions): Promise<Float32Array[]>;

  /** the tokens the model sees (after the embedding prefix) */
  tokenize(text: string, options?: { prefix?: string | null }): Promise<TokenizedText>;
  tokenize(texts: string[], options?: { prefix?: string | null }): Promise<TokenizedText[]>;

  close(): Promise<void>;
}

/** Open a bundle directory and return a ready Predictor (checks the manifest, sizes and SHA-256, like mbert_edge.load). */
export declare function load(path: string, options?: LoadOptions): Promise<Predictor>;

/** Validate a parsed manifest.json (throws BundleFormatError / UnsupportedFormatVersionError). */
export declare function parseManifest(data: unknown): Manifest;

/** The model file ONNX Runtime runs (INT8 first, then fp32, or the one asked for). */
export declare function chooseModelFile(manifest: Manifest, options?: { precision?: string | null; path?: string | null }): FileEntry;

/** Read and validate manifest.json and check every listed file's presence and size. */
export declare function openBundle(path: string): Promise<{ root: string; manifest: Manifest }>;

/** Hex SHA-256 of a file. */
export declare function sha256File(path: string): Promise<string>;

export declare class MbertEdgeError extends Error {}
export declare class BundleError extends MbertEdgeError {}
export declare class BundleNotFoundError extends BundleError {}
export declare class BundleFormatError extends BundleError {}
export declare class UnsupportedFormatVersionError extends BundleFormatError {}
export declare class BundleIntegrityError extends BundleError {}
export declare class BackendUnavailableError extends MbertEdgeError {}
export declare class WrongTaskError extends MbertEdgeError {}
export declare class InvalidInputError extends MbertEdgeError {}
export declare class TextTooLongError extends InvalidInputError {}
