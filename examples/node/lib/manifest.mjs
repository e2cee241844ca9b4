// The bundle schema (format v1): validation of manifest.json, as mbert_edge/manifest.py does it, and the choice of
// the model file to run. No Node APIs: the browser page uses this file too. See docs/bundle-format.md.

import { BackendUnavailableError, BundleFormatError, BundleIntegrityError, UnsupportedFormatVersionError } from './errors.mjs';

export const FORMAT_VERSION = 1;
export const MANIFEST_NAME = 'manifest.json';
export const TASKS = ['text-classification', 'token-classification', 'feature-extraction'];
export const POOLINGS = ['mean', 'cls'];
export const SCORE_FUNCTIONS = ['softmax', 'sigmoid'];
/** Precisions this runtime prefers when several model files are runnable, best first (as Python's onnxruntime backend). */
export const PRECISIONS = ['int8', 'fp32'];
export const BACKEND = 'onnxruntime';

const isObject = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);
const typeName = (x) => {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'list';
  if (typeof x === 'number') return Number.isInteger(x) ? 'int' : 'float';
  if (typeof x === 'string') return 'str';
  if (typeof x === 'boolean') return 'bool';
  if (isObject(x)) return 'dict';
  return typeof x;
};
const CHECKS = {
  str: (v) => typeof v === 'string',
  int: (v) => Number.isInteger(v),
  list: (v) => Array.isArray(v),
  dict: (v) => isObject(v),
};

function typed(d, key, type) {
  if (!(key in d)) throw new BundleFormatError(`manifest.json lacks the required key '${key}'; the bundle is damaged`);
  const value = d[key];
  if (!CHECKS[type](value)) throw new BundleFormatError(`manifest key '${key}' must be a ${type}, not ${typeName(value)}`);
  return value;
}

function strList(d, key) {
  const value = typed(d, key, 'list');
  if (!value.length || !value.every((x) => typeof x === 'string')) {
    throw new BundleFormatError(`manifest key '${key}' must be a non-empty list of names`);
  }
  return [...value];
}

/** Whether a manifest path stays inside the bundle: relative, no `..` part (POSIX and Windows spellings). */
export function isSafeRelativePath(path) {
  if (path === '' || path.startsWith('/') || path.startsWith('\\') || /^[A-Za-z]:/.test(path)) return false;
  return !path.split(/[\\/]/).includes('..');
}

function fileEntry(x) {
  if (!isObject(x)) throw new BundleFormatError("each entry of 'files' must be an object");
  const path = typed(x, 'path', 'str');
  if (!isSafeRelativePath(path)) throw new BundleFormatError(`file path '${path}' escapes the bundle directory`);
  const entry = { path, role: typed(x, 'role', 'str'), size: typed(x, 'size', 'int'), sha256: typed(x, 'sha256', 'str') };
  for (const key of ['backend', 'precision', 'format', 'quantization', 'external_data']) {
    if (x[key] !== undefined && x[key] !== null) entry[key] = x[key];
  }
  const bi = x.batch_invariant;
  if (bi !== undefined && bi !== null) {
    if (typeof bi !== 'boolean') {
      throw new BundleFormatError(`manifest key 'batch_invariant' must be true, false or absent, not ${JSON.stringify(bi)}`);
    }
    entry.batch_invariant = bi;
  }
  return entry;
}

/**
 * Validate a parsed manifest.json and return it normalised: the JSON keys (snake_case, as in docs/bundle-format.md),
 * `labels` keyed by integer id, `embedding` with its defaults filled in.
 */
export function parseManifest(d) {
  if (!isObject(d)) throw new BundleFormatError('manifest.json must hold a JSON object; the bundle is damaged, re-export it');
  const version = d.format_version;
  if (!Number.isInteger(version)) {
    throw new BundleFormatError("manifest.json has no integer 'format_version'; the bundle is damaged");
  }
  if (version > FORMAT_VERSION) {
    throw new UnsupportedFormatVersionError(
      `bundle format ${version} is newer than this mbert-edge understands (up to ${FORMAT_VERSION}); ` +
        'upgrade the mbert-edge JavaScript module or re-export the bundle with the version this app ships',
    );
  }
  if (version < 1) throw new BundleFormatError(`bundle format ${version} is not a valid version`);
  const task = typed(d, 'task', 'str');
  if (!TASKS.includes(task)) {
    throw new BundleFormatError(`unknown task '${task}' in manifest; expected one of ${TASKS.join(', ')}`);
  }
  const max_length = typed(d, 'max_length', 'int');
  if (max_length < 2) throw new BundleFormatError(`max_length ${max_length} is too small`);
  const inputs = strList(d, 'inputs');
  const outputs = strList(d, 'outputs');
  const files = typed(d, 'files', 'list').map(fileEntry);
  let labels = null;
  if (d.labels !== undefined && d.labels !== null) {
    const raw = typed(d, 'labels', 'dict');
    labels = new Map();
    for (const [k, v] of Object.entries(raw)) {
      if (!/^(0|[1-9][0-9]*)$/.test(k)) {
        throw new BundleFormatError(`manifest.json does not follow the bundle schema: label id '${k}' is not an integer`);
      }
      labels.set(Number.parseInt(k, 10), String(v));
    }
    const ids = [...labels.keys()].sort((a, b) => a - b);
    if (ids.some((id, i) => id !== i)) {
      throw new BundleFormatError(
        `manifest key 'labels' must number the labels 0 to ${ids.length - 1}, one per logit column; ` +
          `got ids [${ids.join(', ')}]`,
      );
    }
  }
  const score_function = d.score_function ?? null;
  if (score_function !== null && !SCORE_FUNCTIONS.includes(score_function)) {
    throw new BundleFormatError(`unknown score_function '${score_function}'`);
  }
  let embedding = null;
  if (d.embedding !== undefined && d.embedding !== null) {
    const e = typed(d, 'embedding', 'dict');
    const dim = Number(e.dim);
    if (!('dim' in e) || !Number.isInteger(dim)) {
      throw new BundleFormatError("manifest.json does not follow the bundle schema: embedding needs an integer 'dim'");
    }
    const prefixes = isObject(e.prefixes) ? Object.fromEntries(Object.entries(e.prefixes).map(([k, v]) => [k, String(v)])) : {};
    embedding = {
      dim,
      pooling: String(e.pooling ?? 'mean'),
      normalize: e.normalize === undefined || e.normalize === null ? true : Boolean(e.normalize),
      default_prefix: String(e.default_prefix ?? ''),
      prefixes,
    };
    if (!POOLINGS.includes(embedding.pooling)) {
      throw new BundleFormatError(`unknown pooling '${embedding.pooling}'; expected mean or cls`);
    }
  }
  if ((task === 'text-classification' || task === 'token-classification') && !(labels && labels.size)) {
    throw new BundleFormatError(`a ${task} manifest needs 'labels'`);
  }
  if (task === 'feature-extraction' && embedding === null) {
    throw new BundleFormatError("a feature-extraction manifest needs 'embedding'");
  }
  if (!files.some((f) => f.role === 'model')) throw new BundleFormatError('the manifest lists no model file');
  const weights = new Set(files.filter((f) => f.role === 'weights').map((f) => f.path));
  for (const f of files) {
    if (f.external_data !== undefined && !weights.has(f.external_data)) {
      throw new BundleFormatError(
        `model file ${f.path} names weights '${f.external_data}' that the manifest does not list ` +
          'as a weights file; the bundle is damaged, re-export it',
      );
    }
  }
  return {
    ...d,
    format_version: version,
    task,
    max_length,
    inputs,
    outputs,
    files,
    labels,
    score_function,
    embedding,
    source: isObject(d.source) ? d.source : {},
    export: isObject(d.export) ? d.export : {},
    fidelity: isObject(d.fidelity) ? d.fidelity : {},
  };
}

/** Parse the bytes of manifest.json (strict UTF-8, then JSON) and validate them. */
export function parseManifestBytes(bytes, where = MANIFEST_NAME) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new BundleFormatError(`${where} is not UTF-8 text; the bundle is damaged, re-export it`);
  }
  let data;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new BundleFormatError(`${where} is not valid JSON (${err.message}); the bundle is truncated or damaged, re-export it`);
  }
  return parseManifest(data);
}

/** The files with role "model", in manifest order. */
export const modelFiles = (m) => m.files.filter((f) => f.role === 'model');

/** `model` and the weights file it reads its tensors from (what must be verified to run it). */
export function filesOf(m, model) {
  if (model.external_data === undefined) return [model];
  const w = m.files.find((f) => f.path === model.external_data && f.role === 'weights');
  if (!w) throw new BundleFormatError(`${model.path} names weights '${model.external_data}' that the manifest does not list`);
  return [model, w];
}

/** The bundled tokenizer.json entry. */
export function tokenizerFile(m) {
  const t = m.files.find((f) => f.role === 'tokenizer');
  if (!t) throw new BundleFormatError('the manifest lists no tokenizer file; re-export the bundle');
  return t;
}

const describe = (files) =>
  files.map((f) => `${f.path} (${f.backend ?? null}/${f.format ?? null}/${f.precision ?? null})`).join(', ') || 'no model files';

/**
 * The model file ONNX Runtime runs: `precision` if given, else the most preferred of PRECISIONS (INT8 first), among
 * the files made for onnxruntime in ONNX format, as `mbert_edge.load(backend="auto")` picks it (a "weight-only" file
 * comes after the others of its precision). `path` names one model file explicitly (e.g. the browser variant); it
 * must be such a file.
 */
export function chooseModelFile(m, { precision = null, path = null } = {}) {
  const files = modelFiles(m);
  const runnable = files.filter((f) => f.backend === BACKEND && f.format === 'onnx');
  if (path !== null) {
    const f = runnable.find((x) => x.path === path);
    if (!f) {
      throw new BackendUnavailableError(
        `the bundle has no onnxruntime model file '${path}'; it has ${describe(files)}`,
      );
    }
    return f;
  }
  // the browser variant (quantization "weight-only": INT8 weights, fp32 activations) only when no other file of its
  // precision is there, as Python's backends choose
  const ordered = [...runnable.filter((f) => f.quantization !== 'weight-only'), ...runnable.filter((f) => f.quantization === 'weight-only')];
  for (const p of precision ? [precision] : PRECISIONS) {
    const f = ordered.find((x) => x.precision === p);
    if (f) return f;
  }
  const others = [...new Set(files.map((f) => f.backend).filter((b) => b && b !== BACKEND))].sort();
  const hint = others.length ? `; its model is made for ${others.join(', ')}, which this module does not run` : '';
  throw new BackendUnavailableError(
    `no installed backend can run this bundle${precision ? ` at precision ${precision}` : ''} ` +
      `(tried onnxruntime); the bundle has ${describe(files)}${hint}`,
  );
}

/** Refuse a bundle file whose size is not the manifest's (both runtimes give the same message). */
export function checkSize(entry, size) {
  if (size !== entry.size) {
    throw new BundleIntegrityError(
      `bundle file ${entry.path} has ${size} bytes, the manifest says ${entry.size}: it was truncated or ` +
        'changed; re-export or copy the bundle again',
    );
  }
}

/** Refuse a bundle file whose SHA-256 (hex) is not the manifest's. */
export function checkDigest(entry, digest) {
  if (digest !== entry.sha256) {
    throw new BundleIntegrityError(
      `bundle file ${entry.path} fails its checksum (sha256 ${digest.slice(0, 12)}…, manifest ` +
        `${String(entry.sha256).slice(0, 12)}…): it was altered or damaged; re-export or copy the bundle again`,
    );
  }
}
