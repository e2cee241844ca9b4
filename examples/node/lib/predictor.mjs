// Predictor: one text's path from the caller to the answer, as mbert_edge/predictor.py does it.
//
// texts -> validation -> prefix -> tokenizer (truncation at max_length) -> length-sorted batches padded to their
//       longest -> model -> task head (scores, entities, pooled embeddings) -> input order.
//
// No Node APIs: the runtime-specific parts come in as two adapters (index.mjs for Node, the browser page for
// onnxruntime-web):
//   tokenizer: { maxLength, truncation, padId, unkId, hasOffsets, encodeBatch(texts) -> Promise<Encoding[]>,
//                decode(tokens) -> string }   Encoding: { ids, typeIds, tokens, offsets, special, overflowing }
//   session:   { inputNames, outputNames, run(feeds) -> Promise<{name: {data, dims}}>, release() }
//              feeds: {name: {data: BigInt64Array, dims: [batch, seq]}}

import {
  BackendUnavailableError,
  BundleFormatError,
  InvalidInputError,
  TextTooLongError,
  WrongTaskError,
} from './errors.mjs';
import { aggregateSimple, formatScores, isBlank, l2Normalize, lengthSortedBatches, pool, scoresFromLogits } from './heads.mjs';

export const DEFAULT_BATCH_SIZE = 32;
export const DEFAULT_MAX_TOKENS = 1024; // padded tokens per model call: docs/benchmarks.md, "Runtime settings"

function describeType(x) {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'array';
  return typeof x;
}

// half of a UTF-16 surrogate pair without its other half: not valid Unicode (Python refuses it the same way)
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Validate the caller's input; return [texts as an array, whether a single string was given]. */
export function asTexts(texts) {
  let items;
  let single;
  if (typeof texts === 'string') [items, single] = [[texts], true];
  else if (Array.isArray(texts)) [items, single] = [[...texts], false];
  else if (texts === null || texts === undefined) {
    throw new InvalidInputError(`texts is ${texts}; pass a string or an array of strings`);
  } else throw new InvalidInputError(`texts must be a string or an array of strings, not ${describeType(texts)}`);
  items.forEach((t, i) => {
    const where = single ? 'the text' : `texts[${i}]`;
    if (typeof t !== 'string') throw new InvalidInputError(`${where} is ${describeType(t)}, not a string; convert or drop it`);
    if (isBlank(t)) throw new InvalidInputError(`${where} is empty or only whitespace; drop it before predicting`);
    const bad = LONE_SURROGATE.exec(t);
    if (bad !== null) {
      const code = bad[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0');
      const at = [...t.slice(0, bad.index)].length; // in code points, as Python counts
      throw new InvalidInputError(
        `${where} holds a lone surrogate (U+${code}) at character ${at}, which is not valid Unicode (json.loads of ` +
          "an escaped half of a pair, or bytes decoded with errors='surrogateescape', make these); decode the text " +
          "correctly, or replace them: text.encode('utf-8', 'replace').decode()",
      );
    }
  });
  return [items, single];
}

const isPositiveInt = (x) => Number.isInteger(x) && x >= 1;

/**
 * Whether an encoding holds a token (not a special one) covering a character at or after `skipChars` (the prefix's
 * length in code points): false for text the tokenizer drops entirely (control, format or zero-width characters).
 * Not checked where the tokenizer gives no offsets (the browser's).
 */
function hasContent(enc, skipChars) {
  if (!enc.offsets || !enc.special) return true;
  return enc.special.some((special, i) => !special && enc.offsets[i] && enc.offsets[i][1] > skipChars);
}

export class Predictor {
  /**
   * Made by `load()` (Node) or the browser loader; not meant to be constructed by apps.
   * @param {object} args { manifest, modelFile, tokenizer, session, path, logger }
   */
  constructor({ manifest, modelFile, tokenizer, session, path = null, logger = console }) {
    this.manifest = manifest;
    this.modelFile = modelFile;
    this.tokenizer = tokenizer;
    this.session = session;
    this.path = path;
    this.logger = logger;
  }

  /** text-classification, token-classification or feature-extraction. */
  get task() {
    return this.manifest.task;
  }

  /** Label names in id order (empty for feature extraction). */
  get labels() {
    const labels = this.manifest.labels ?? new Map();
    return [...labels.keys()].sort((a, b) => a - b).map((k) => labels.get(k));
  }

  /** Width of the sentence embeddings (feature-extraction bundles). */
  get embeddingDim() {
    const spec = this.manifest.embedding;
    if (!spec) throw new WrongTaskError(`this bundle is a ${this.task} model; it makes no embeddings`);
    return spec.dim;
  }

  toString() {
    const f = this.modelFile;
    return `Predictor(task='${this.task}', backend='onnxruntime', file='${f.path}', precision='${f.precision}')`;
  }

  /**
   * Classify texts (text-classification) or find entities in them (token-classification).
   * text-classification: per text {label, score} (topK 1), a list of the topK best, or every label (topK null).
   * token-classification: per text a list of {entity_group, score, word, start, end}, word-level groups as
   * transformers' aggregation_strategy="simple"; start/end index the text in UTF-16 units (JavaScript's
   * `text.slice(start, end)`), or in code points with `offsets: 'codepoint'` (the numbers Python gives).
   * A string gives one result; an array gives an array in input order.
   */
  async predict(texts, { topK = 1, batchSize = DEFAULT_BATCH_SIZE, offsets = 'utf16' } = {}) {
    if (this.task === 'feature-extraction') {
      throw new WrongTaskError('this bundle makes sentence embeddings: call embed(texts), not predict()');
    }
    if (topK !== null && !isPositiveInt(topK)) {
      throw new InvalidInputError('topK must be a positive integer, or null for every label');
    }
    if (offsets !== 'utf16' && offsets !== 'codepoint') {
      throw new InvalidInputError("offsets must be 'utf16' or 'codepoint'");
    }
    if (this.task === 'token-classification' && !this.tokenizer.hasOffsets) {
      throw new WrongTaskError(
        "token classification needs the tokenizer's character offsets, which this tokenizer does not give; " +
          'run the bundle with the Node module (native tokenizers) instead',
      );
    }
    const [items, single] = asTexts(texts);
    const results = new Array(items.length).fill(null);
    const labels = this.manifest.labels;
    for await (const { idx, encodings, outputs } of this.#forward(items, batchSize, { single })) {
      const logits = outputs[this.session.outputNames[0]];
      const width = logits.dims[logits.dims.length - 1];
      if (width !== labels.size) {
        const per = this.task === 'text-classification' ? 'text' : 'token';
        throw new BundleFormatError(
          `the model gives ${width} scores per ${per} but the manifest names ${labels.size} ` +
            'labels: its model file and manifest do not belong together; export the bundle again',
        );
      }
      if (this.task === 'text-classification') {
        idx.forEach((i, row) => {
          const scores = scoresFromLogits(
            logits.data.subarray(row * width, (row + 1) * width),
            this.manifest.score_function,
          );
          results[i] = formatScores(scores, labels, topK);
        });
      } else {
        const [, seq, n] = logits.dims;
        idx.forEach((i, row) => {
          const rows = logits.data.subarray(row * seq * n, (row * seq + encodings[row].ids.length) * n);
          results[i] = aggregateSimple(items[i], rows, n, encodings[row], labels, (t) => this.tokenizer.decode(t),
            this.tokenizer.unkId, offsets);
        });
      }
    }
    return single ? results[0] : results;
  }

  /**
   * Sentence embeddings (Float32Array of length dim): one for a string, an array of them for an array.
   * `normalize` defaults to the manifest (L2 for most sentence encoders); `prefix` goes in front of every text, by
   * default the model's own ("query: " for e5 models; "passage: " for documents in retrieval; "" for none).
   */
  async embed(texts, { normalize = null, prefix = null, batchSize = DEFAULT_BATCH_SIZE } = {}) {
    const spec = this.manifest.embedding;
    if (this.task !== 'feature-extraction' || !spec) {
      throw new WrongTaskError(`this bundle is a ${this.task} model: call predict(texts), not embed()`);
    }
    let [items, single] = asTexts(texts);
    if (prefix === null || prefix === undefined) prefix = spec.default_prefix;
    else if (typeof prefix !== 'string') throw new InvalidInputError("prefix must be a string (use '' for none)");
    const prefixChars = [...prefix].length; // code points, as the tokenizer's offsets count
    if (prefix) items = items.map((t) => prefix + t);
    const doNorm = normalize === null || normalize === undefined ? spec.normalize : Boolean(normalize);
    const out = new Array(items.length);
    for await (const { idx, feeds, outputs } of this.#forward(items, batchSize, { single, prefixChars })) {
      const hidden = outputs[this.manifest.outputs[0]] ?? outputs[this.session.outputNames[0]];
      const [batch, seq, dim] = hidden.dims;
      const vectors = pool(hidden.data, feeds.attention_mask.data, batch, seq, dim, spec.pooling);
      idx.forEach((i, row) => {
        out[i] = doNorm ? l2Normalize(vectors[row]) : vectors[row];
      });
    }
    return single ? out[0] : out;
  }

  /**
   * The tokens the model sees for each text (after the prefix, for embeddings: the model's default unless given):
   * {ids, tokens, offsets} with offsets in code points, as Python's tokenizers gives them (null where the tokenizer
   * gives none).
   */
  async tokenize(texts, { prefix = null } = {}) {
    let [items, single] = asTexts(texts);
    if (this.task === 'feature-extraction') {
      const p = prefix ?? this.manifest.embedding.default_prefix;
      if (p) items = items.map((t) => p + t);
    }
    const encs = await this.#encode(items);
    const out = encs.map((e) => ({ ids: e.ids, tokens: e.tokens, offsets: e.offsets }));
    return single ? out[0] : out;
  }

  /** Release the model's session. */
  async close() {
    await this.session.release?.();
  }

  async #encode(items) {
    const encodings = await this.tokenizer.encodeBatch(items);
    if (!this.tokenizer.truncation) {
      encodings.forEach((e, i) => {
        if (e.overflowing) {
          throw new TextTooLongError(
            `text ${i} is longer than the model's ${this.tokenizer.maxLength} tokens; shorten or split it, or ` +
              'load the bundle with truncation: true to cut it at max_length',
          );
        }
      });
    }
    return encodings;
  }

  /** Tokenize, batch by length, run; yield {idx, encodings, feeds, outputs} per batch. */
  async *#forward(items, batchSize, { single = false, prefixChars = 0 } = {}) {
    if (!items.length) return;
    if (!isPositiveInt(batchSize)) throw new InvalidInputError('batchSize must be a positive integer');
    const encodings = await this.#encode(items);
    encodings.forEach((e, i) => {
      if (!hasContent(e, prefixChars)) {
        throw new InvalidInputError(
          `${single ? 'the text' : `texts[${i}]`} has nothing the tokenizer keeps (only control, format or ` +
            'zero-width characters, which it drops); drop it before predicting',
        );
      }
    });
    const truncated = encodings.filter((e) => e.overflowing).length;
    if (truncated) {
      this.logger?.warn?.(`${truncated} of ${items.length} texts were cut at max_length=${this.tokenizer.maxLength} tokens`);
    }
    const lengths = encodings.map((e) => e.ids.length);
    const maxTokens = Math.max(DEFAULT_MAX_TOKENS, this.tokenizer.maxLength);
    for (const idx of lengthSortedBatches(lengths, batchSize, maxTokens)) {
      const batch = idx.map((i) => encodings[i]);
      const feeds = pad(batch, this.tokenizer.padId);
      const missing = this.session.inputNames.filter((n) => !(n in feeds));
      if (missing.length) {
        throw new BackendUnavailableError(`the model needs inputs ${JSON.stringify(missing)} that the runtime does not provide`);
      }
      const wanted = Object.fromEntries(this.session.inputNames.map((n) => [n, feeds[n]]));
      yield { idx, encodings: batch, feeds, outputs: await this.session.run(wanted) };
    }
  }
}

/** Stack encodings into int64 input_ids / attention_mask / token_type_ids, padded to the batch's longest. */
export function pad(encodings, padId) {
  const n = encodings.length;
  const width = Math.max(...encodings.map((e) => e.ids.length));
  const ids = new BigInt64Array(n * width).fill(BigInt(padId));
  const mask = new BigInt64Array(n * width);
  const types = new BigInt64Array(n * width);
  encodings.forEach((e, row) => {
    for (let k = 0; k < e.ids.length; k++) {
      ids[row * width + k] = BigInt(e.ids[k]);
      mask[row * width + k] = 1n;
      types[row * width + k] = BigInt(e.typeIds[k]);
    }
  });
  const dims = [n, width];
  return { input_ids: { data: ids, dims }, attention_mask: { data: mask, dims }, token_type_ids: { data: types, dims } };
}
