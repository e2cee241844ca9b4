// mbert-edge for Node (Electron main process, Tauri sidecars, servers): load a bundle the way `mbert_edge.load` does
// and get the same answers as the Python runtime. Runs on onnxruntime-node and Hugging Face's native `tokenizers`
// bindings (the same Rust tokenizer as Python's), nothing else.
//
//   import { load } from 'mbert-edge-node';
//   const model = await load('bundles/e5-small');            // checks the manifest, sizes and SHA-256 of what it loads
//   const vectors = await model.embed(['Where is the station?', '¿Dónde está la estación?']);   // Float32Array[]
//
// The contract both runtimes follow is docs/bundle-format.md.

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import nodePath from 'node:path';

import * as ort from 'onnxruntime-node';
import { Tokenizer } from 'tokenizers';

import {
  BackendUnavailableError,
  BundleFormatError,
  BundleIntegrityError,
  BundleNotFoundError,
  InvalidInputError,
} from './lib/errors.mjs';
import {
  MANIFEST_NAME,
  checkDigest,
  checkSize,
  chooseModelFile,
  filesOf,
  parseManifestBytes,
  tokenizerFile,
} from './lib/manifest.mjs';
import { Predictor } from './lib/predictor.mjs';

export * from './lib/errors.mjs';
export { FORMAT_VERSION, chooseModelFile, parseManifest } from './lib/manifest.mjs';
export { Predictor } from './lib/predictor.mjs';

const PAD_CANDIDATES = ['[PAD]', '<pad>', '<PAD>'];

/** Hex SHA-256 of a file, streamed (constant memory). */
export async function sha256File(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk);
  return hash.digest('hex');
}

/**
 * Open the bundle directory at `path`: read and validate its manifest, check that every listed file is present with
 * its recorded size. Returns {root, manifest}. Raises BundleNotFoundError, BundleFormatError,
 * UnsupportedFormatVersionError or BundleIntegrityError.
 */
export async function openBundle(path) {
  const root = String(path);
  const stat = await fs.stat(root).catch(() => null);
  if (!stat?.isDirectory()) {
    throw new BundleNotFoundError(`no bundle directory at ${root}; create one with \`mbert-edge export SOURCE -o ${root}\``);
  }
  const manifestPath = nodePath.join(root, MANIFEST_NAME);
  const bytes = await fs.readFile(manifestPath).catch(() => null);
  if (bytes === null) {
    throw new BundleNotFoundError(
      `${root} has no ${MANIFEST_NAME}, so it is not an mbert-edge bundle (or an incomplete one); re-export it`,
    );
  }
  const manifest = parseManifestBytes(bytes, manifestPath);
  for (const entry of manifest.files) await checkFile(root, entry, false);
  return { root, manifest };
}

/** Presence and size of a listed file, and with `hash` its SHA-256 (BundleIntegrityError on the first mismatch). */
export async function checkFile(root, entry, hash) {
  const p = nodePath.join(root, entry.path);
  const stat = await fs.stat(p).catch(() => null);
  if (!stat?.isFile()) {
    throw new BundleIntegrityError(
      `bundle file ${entry.path} is missing from ${root}; the bundle is incomplete, re-export or copy it again`,
    );
  }
  checkSize(entry, stat.size);
  if (hash) checkDigest(entry, await sha256File(p));
}

/** The bundle's tokenizer.json run by the native `tokenizers` bindings, with truncation at max_length, no padding. */
export async function nativeTokenizer(path, maxLength, truncation = true) {
  let tok;
  let unkToken = null;
  try {
    const text = await fs.readFile(path, 'utf8');
    tok = Tokenizer.fromString(text);
    const model = JSON.parse(text).model ?? {};
    // as Python's BundleTokenizer: the model's unk_token (WordPiece, BPE, WordLevel); Unigram models name none
    if (typeof model.unk_token === 'string') unkToken = model.unk_token;
  } catch (err) {
    throw new BundleFormatError(`cannot read the bundled tokenizer ${path}: ${err.message}; re-export the bundle`, { cause: err });
  }
  tok.disablePadding();
  // always on, so that a 1 MB text never becomes a 1 MB tensor; truncation: false reports such texts instead
  tok.setTruncation(maxLength);
  const padId = PAD_CANDIDATES.map((t) => tok.tokenToId(t)).find((i) => i !== null && i !== undefined) ?? 0;
  const unkId = unkToken === null ? null : (tok.tokenToId(unkToken) ?? null);
  const decoder = tok.getDecoder();
  return {
    maxLength,
    truncation,
    padId,
    unkId,
    hasOffsets: true,
    async encodeBatch(texts) {
      const encodings = await tok.encodeBatch(texts);
      return encodings.map((e) => ({
        ids: e.getIds(),
        typeIds: e.getTypeIds(),
        tokens: e.getTokens(),
        offsets: e.getOffsets(),
        special: e.getSpecialTokensMask(),
        overflowing: e.getOverflowing().length > 0,
      }));
    },
    decode: (tokens) => (decoder ? decoder.decode(tokens) : tokens.join('')),
  };
}

/**
 * An onnxruntime-node session with the Python runtime's settings: `threads` intra-op threads (default: ONNX Runtime's
 * choice), one inter-op thread, sequential execution, every graph optimisation, no memory patterns, workers that spin
 * inside a call and stop as soon as it returns.
 */
export async function nodeSession(modelPath, threads = null) {
  if (threads !== null && !(Number.isInteger(threads) && threads >= 1)) {
    throw new InvalidInputError("threads must be a positive integer, or null for ONNX Runtime's default");
  }
  const options = {
    executionProviders: ['cpu'],
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    enableMemPattern: false,
    logSeverityLevel: 3,
    extra: { session: { intra_op: { allow_spinning: '1' }, force_spinning_stop: '1' } },
  };
  if (threads !== null) options.intraOpNumThreads = threads;
  let session;
  try {
    session = await ort.InferenceSession.create(modelPath, options);
  } catch (err) {
    throw new BackendUnavailableError(`ONNX Runtime could not load ${modelPath}: ${err.message}`, { cause: err });
  }
  return {
    inputNames: [...session.inputNames],
    outputNames: [...session.outputNames],
    async run(feeds) {
      const tensors = {};
      for (const [name, { data, dims }] of Object.entries(feeds)) tensors[name] = new ort.Tensor('int64', data, dims);
      const out = await session.run(tensors);
      return Object.fromEntries(Object.entries(out).map(([name, t]) => [name, { data: t.data, dims: [...t.dims] }]));
    },
    release: () => session.release(),
  };
}

/**
 * Open the bundle at `path` and return a ready Predictor, as `mbert_edge.load` does: the manifest and every file's
 * presence and size are checked, then the SHA-256 of the files it reads (the chosen model file, its weights file,
 * the tokenizer) unless `verify: false`.
 *
 * @param {string} path a bundle directory written by `mbert-edge export`
 * @param {object} [options]
 * @param {number|null} [options.threads] CPU threads for one call (default: ONNX Runtime's choice)
 * @param {string|null} [options.precision] run the model file of this precision ('fp32', 'int8') instead of INT8 first
 * @param {string|null} [options.modelFile] run this model file (its manifest path) instead
 * @param {boolean} [options.truncation] cut texts longer than max_length tokens (default); false: TextTooLongError
 * @param {boolean} [options.verify] hash the files it loads (default true)
 * @param {{warn: Function}|null} [options.logger] where the truncation warning goes (default: console)
 */
export async function load(
  path,
  { threads = null, precision = null, modelFile = null, truncation = true, verify = true, logger = console } = {},
) {
  const { root, manifest } = await openBundle(path);
  const entry = chooseModelFile(manifest, { precision, path: modelFile });
  const tokEntry = tokenizerFile(manifest);
  if (verify) {
    for (const f of [...filesOf(manifest, entry), tokEntry]) await checkFile(root, f, true);
  }
  const [session, tokenizer] = await Promise.all([
    nodeSession(nodePath.join(root, entry.path), threads),
    nativeTokenizer(nodePath.join(root, tokEntry.path), manifest.max_length, truncation),
  ]);
  return new Predictor({ manifest, modelFile: entry, tokenizer, session, path: root, logger });
}
