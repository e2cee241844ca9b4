// mbert-edge in the browser: load a bundle over HTTP the way `mbert_edge.load` opens one from disk, and run it with
// onnxruntime-web (WASM) and the pure-JavaScript tokenizer of @huggingface/tokenizers.
//
// Same steps and checks as the Node module (manifest validated, every file the page loads checked for its size and
// SHA-256 with WebCrypto, INT8 file first), same task heads and batching: ../node/lib/*.mjs are shared.
// The model file: the browser variant (model.wo8.onnx, `mbert-edge export --quantize dynamic --browser-variant`) when
// the bundle has one, else the one Python runs (INT8 first). Differences, measured in tests/test_browser_page.py:
//  * the tokenizer is tokenizers.js, not the Rust tokenizer: identical ids on ordinary multilingual text, different on
//    a few edge cases (docs/javascript.md); it gives no character offsets, so token classification is refused here;
//  * INT8 files with quantized activations (dynamic, static) run, every op included, but round some activations
//    differently from x86 (e5-small: up to 0.014 per embedding component, min cosine 0.9972 to Python's); the browser
//    variant keeps activations in fp32 and gives Python's answers (within 1.2e-7);
//  * every byte of the model is downloaded into memory (no memory-mapping), so the bundle's size is what a user waits for.

import * as ort from 'onnxruntime-web';
import { Tokenizer } from '@huggingface/tokenizers';

import { BackendUnavailableError, BundleFormatError, BundleIntegrityError, BundleNotFoundError } from '../node/lib/errors.mjs';
import {
  MANIFEST_NAME,
  checkDigest,
  checkSize,
  chooseModelFile,
  filesOf,
  modelFiles,
  parseManifestBytes,
  tokenizerFile,
} from '../node/lib/manifest.mjs';
import { Predictor } from '../node/lib/predictor.mjs';

const PAD_CANDIDATES = ['[PAD]', '<pad>', '<PAD>'];

async function sha256Hex(bytes) {
  if (!globalThis.crypto?.subtle) {
    throw new BackendUnavailableError(
      'checking SHA-256 needs WebCrypto, which browsers give to secure pages only: serve the page over https ' +
        '(or from localhost), or load with verify: false for a bundle you control',
    );
  }
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Fetch one listed file, check its size and (with verify) its SHA-256; count the bytes. */
async function fetchChecked(base, entry, verify, stats) {
  const url = new URL(entry.path, base);
  const res = await fetch(url);
  if (!res.ok) {
    throw new BundleIntegrityError(
      `bundle file ${entry.path} is missing from ${base} (HTTP ${res.status}); the bundle is incomplete, re-export or copy it again`,
    );
  }
  const bytes = new Uint8Array(await res.arrayBuffer());
  stats.bytes += bytes.byteLength;
  stats.files[entry.path] = bytes.byteLength;
  checkSize(entry, bytes.byteLength);
  if (verify) checkDigest(entry, await sha256Hex(bytes));
  return bytes;
}

/**
 * tokenizer.json run by tokenizers.js. Truncation as the Rust tokenizer does it: the text's own tokens are cut so
 * that, with the special tokens the post-processor adds, the sequence is max_length long.
 */
export function jsTokenizer(json, maxLength, truncation = true) {
  let tok;
  try {
    tok = new Tokenizer(json, {});
  } catch (err) {
    throw new BundleFormatError(`cannot read the bundled tokenizer: ${err.message}; re-export the bundle`, { cause: err });
  }
  const padId = PAD_CANDIDATES.map((t) => tok.token_to_id(t)).find((i) => i !== undefined && i !== null) ?? 0;
  const unkToken = typeof json.model?.unk_token === 'string' ? json.model.unk_token : null;
  const unkId = unkToken === null ? null : (tok.token_to_id(unkToken) ?? null);
  // how many special tokens the post-processor puts before and after a single text
  const probe = tok.encode('a').ids;
  const plainProbe = tok.encode('a', { add_special_tokens: false }).ids;
  const lead = probe.findIndex((_, i) => plainProbe.every((id, k) => probe[i + k] === id));
  const trail = probe.length - lead - plainProbe.length;
  const room = maxLength - lead - trail;
  return {
    maxLength,
    truncation,
    padId,
    unkId,
    hasOffsets: false,
    async encodeBatch(texts) {
      return texts.map((text) => {
        const full = tok.encode(text);
        const plain = tok.encode(text, { add_special_tokens: false });
        const overflowing = plain.ids.length > room;
        const pick = (a, p) => (overflowing ? [...a.slice(0, lead), ...p.slice(0, room), ...a.slice(a.length - trail)] : a);
        const ids = pick(full.ids, plain.ids);
        return {
          ids,
          typeIds: new Array(ids.length).fill(0),
          tokens: pick(full.tokens, plain.tokens),
          offsets: null,
          special: null,
          overflowing,
        };
      });
    },
    decode: (tokens) => tokens.join(''),
  };
}

/** An onnxruntime-web (WASM) session over the model bytes and its external weights. */
export async function webSession(modelBytes, externalData = null) {
  const options = { executionProviders: ['wasm'], graphOptimizationLevel: 'all', logSeverityLevel: 3 };
  if (externalData) options.externalData = [externalData];
  let session;
  try {
    session = await ort.InferenceSession.create(modelBytes, options);
  } catch (err) {
    throw new BackendUnavailableError(`onnxruntime-web could not load the model: ${err.message}`, { cause: err });
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
 * Load the bundle at `baseUrl` (a directory URL ending in '/'). Returns {predictor, stats}: stats.bytes downloaded
 * and per file, stats.ms per step. Options: precision, modelFile, verify (default true), truncation, wasmPaths,
 * numThreads (default: up to 4 when the page is cross-origin isolated, else 1).
 */
export async function loadBundle(baseUrl, options = {}) {
  const { precision = null, modelFile = null, verify = true, truncation = true } = options;
  const base = new URL(baseUrl, location.href);
  const stats = { bytes: 0, files: {}, ms: {} };
  const t0 = performance.now();
  if (options.wasmPaths) ort.env.wasm.wasmPaths = options.wasmPaths;
  ort.env.wasm.numThreads =
    options.numThreads ?? (globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1);

  const res = await fetch(new URL(MANIFEST_NAME, base));
  if (!res.ok) {
    throw new BundleNotFoundError(
      `${base} has no ${MANIFEST_NAME} (HTTP ${res.status}), so it is not an mbert-edge bundle (or an incomplete one)`,
    );
  }
  const manifestBytes = new Uint8Array(await res.arrayBuffer());
  stats.bytes += manifestBytes.byteLength;
  stats.files[MANIFEST_NAME] = manifestBytes.byteLength;
  const manifest = parseManifestBytes(manifestBytes, `${base}${MANIFEST_NAME}`);
  // the browser variant when the bundle has one (quantization "weight-only": its answers do not depend on the CPU's
  // kernels, so they are Python's); otherwise the file Python would run
  const variant = modelFiles(manifest).find((f) => f.backend === 'onnxruntime' && f.quantization === 'weight-only');
  const entry = !precision && !modelFile && variant ? variant : chooseModelFile(manifest, { precision, path: modelFile });
  const [modelEntry, weightsEntry] = filesOf(manifest, entry);
  const tokEntry = tokenizerFile(manifest);
  // the three downloads run side by side; each is checked as soon as it arrives
  const [modelBytes, weightsBytes, tokBytes] = await Promise.all([
    fetchChecked(base, modelEntry, verify, stats),
    weightsEntry ? fetchChecked(base, weightsEntry, verify, stats) : null,
    fetchChecked(base, tokEntry, verify, stats),
  ]);
  stats.ms.download_and_verify = performance.now() - t0;
  const t1 = performance.now();
  const tokenizer = jsTokenizer(JSON.parse(new TextDecoder().decode(tokBytes)), manifest.max_length, truncation);
  stats.ms.tokenizer = performance.now() - t1;
  const t2 = performance.now();
  const external = weightsEntry ? { path: weightsEntry.path.split('/').pop(), data: weightsBytes } : null;
  const session = await webSession(modelBytes, external);
  stats.ms.session = performance.now() - t2;
  stats.ms.total = performance.now() - t0;
  stats.numThreads = ort.env.wasm.numThreads;
  stats.ortVersion = ort.env.versions?.web ?? null;
  const predictor = new Predictor({ manifest, modelFile: entry, tokenizer, session, path: base.href });
  return { predictor, stats };
}
