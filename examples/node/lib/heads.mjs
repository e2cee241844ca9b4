// Task heads: what turns model outputs into answers, as mbert_edge/tasks/*.py does it (no model code, no Node APIs).
// Arithmetic is done in float64 and results are rounded to float32 (Math.fround), where Python's numpy works in
// float32: the two agree to a few float32 ulps.

const f32 = Math.fround;

// ------------------------------------------------------------------ text
/** Python's str.isspace() characters: a text made only of these is refused as empty (as Python's `not t.strip()`). */
const PY_SPACE = /^[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/;
export const isBlank = (text) => PY_SPACE.test(text);

/**
 * UTF-16 index of every code point boundary of `text`: `map[k]` is where code point `k` starts (and
 * `map[codePointCount]` is `text.length`). Python indexes strings by code point; JavaScript by UTF-16 unit, and
 * characters outside the BMP (emoji, 𝔘, 𠜎) take two units.
 */
export function codePointIndex(text) {
  const map = [0];
  let u = 0;
  for (const ch of text) {
    u += ch.length;
    map.push(u);
  }
  return map;
}

// ------------------------------------------------------- classification
export function softmax(row) {
  let max = -Infinity;
  for (const x of row) if (x > max) max = x;
  let sum = 0;
  const e = new Float64Array(row.length);
  for (let i = 0; i < row.length; i++) {
    e[i] = Math.exp(row[i] - max);
    sum += e[i];
  }
  const out = new Float32Array(row.length);
  for (let i = 0; i < row.length; i++) out[i] = e[i] / sum;
  return out;
}

export function sigmoid(row) {
  const out = new Float32Array(row.length);
  for (let i = 0; i < row.length; i++) out[i] = 1 / (1 + Math.exp(-row[i]));
  return out;
}

/** The manifest's score function: softmax by default, sigmoid for multi-label (or one-label) classifiers. */
export const scoresFromLogits = (row, scoreFunction) => (scoreFunction === 'sigmoid' ? sigmoid(row) : softmax(row));

/** Indices by descending score; equal scores keep label order (numpy's stable argsort of -scores). */
export function rankLabels(scores) {
  return Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a] || a - b);
}

/** One text's result: topK 1 a {label, score}, topK k a list of the k best, null every label (transformers' pipelines). */
export function formatScores(scores, labels, topK) {
  let order = rankLabels(scores);
  if (topK !== null) order = order.slice(0, topK);
  const results = order.map((i) => ({ label: labels.get(i), score: scores[i] }));
  return topK === 1 ? results[0] : results;
}

// ------------------------------------------------------------ embeddings
/**
 * Pool token states `hidden` (Float32Array, batch x seq x dim) into one vector per row: the mean over the attention
 * mask (padding never counts) or the first token (CLS).
 */
export function pool(hidden, mask, batch, seq, dim, pooling) {
  const out = [];
  for (let b = 0; b < batch; b++) {
    const v = new Float32Array(dim);
    if (pooling === 'cls') {
      v.set(hidden.subarray(b * seq * dim, b * seq * dim + dim));
    } else {
      const acc = new Float64Array(dim);
      let count = 0;
      for (let s = 0; s < seq; s++) {
        if (Number(mask[b * seq + s]) === 0) continue;
        count += 1;
        const base = (b * seq + s) * dim;
        for (let k = 0; k < dim; k++) acc[k] += hidden[base + k];
      }
      const denom = Math.max(count, 1e-9);
      for (let k = 0; k < dim; k++) v[k] = acc[k] / denom;
    }
    out.push(v);
  }
  return out;
}

/** The vector scaled to unit L2 norm (zeros stay zero), in place; returns it. */
export function l2Normalize(v, eps = 1e-12) {
  let ss = 0;
  for (const x of v) ss += x * x;
  const n = Math.max(Math.sqrt(f32(ss)), eps);
  for (let k = 0; k < v.length; k++) v[k] = v[k] / n;
  return v;
}

// --------------------------------------------------- token classification
const IGNORED_LABELS = ['O'];

function tag(label) {
  if (label.startsWith('B-')) return ['B', label.slice(2)];
  if (label.startsWith('I-')) return ['I', label.slice(2)];
  return ['I', label];
}

/**
 * Group one text's token predictions into entities, as transformers' TokenClassificationPipeline with
 * aggregation_strategy="simple": adjacent tokens whose tags match (B-X starts an entity, I-X or a bare X continues
 * one) are merged, an entity's score is the mean of its tokens' scores, entities tagged O are dropped.
 *
 * `logits` holds this text's rows (tokens x labels); `enc` its encoding ({ids, tokens, offsets, special}) with
 * offsets in code points as the tokenizer gives them; `decode` joins token strings into a word (the tokenizer's
 * decoder). `start`/`end` come back in code points (`offsets: 'codepoint'`, Python's numbers) or in UTF-16 units
 * (`'utf16'`, so that `text.slice(start, end)` is the entity's text in JavaScript).
 */
export function aggregateSimple(text, logits, numLabels, enc, labels, decode, unkId, offsets = 'utf16') {
  const cps = Array.from(text); // code points, for Python-style slicing
  const perToken = [];
  for (let i = 0; i < enc.ids.length; i++) {
    if (enc.special[i]) continue;
    const scores = softmax(logits.subarray(i * numLabels, (i + 1) * numLabels));
    const [start, end] = enc.offsets[i];
    const word = enc.ids[i] === unkId ? cps.slice(start, end).join('') : enc.tokens[i];
    let best = 0;
    for (let k = 1; k < numLabels; k++) if (scores[k] > scores[best]) best = k;
    perToken.push({ entity: labels.get(best), score: scores[best], word, start, end });
  }
  const groups = [];
  for (const ent of perToken) {
    if (groups.length) {
      const [bi, t] = tag(ent.entity);
      const last = groups[groups.length - 1];
      const [, lastTag] = tag(last[last.length - 1].entity);
      if (t === lastTag && bi !== 'B') {
        last.push(ent);
        continue;
      }
    }
    groups.push([ent]);
  }
  const map = offsets === 'utf16' ? codePointIndex(text) : null;
  const entities = [];
  for (const group of groups) {
    const first = group[0].entity;
    const dash = first.indexOf('-');
    const name = dash === -1 ? first : first.slice(dash + 1);
    if (IGNORED_LABELS.includes(name)) continue;
    let sum = 0;
    for (const e of group) sum += e.score;
    let start = group[0].start;
    let end = group[group.length - 1].end;
    if (map) [start, end] = [map[start], map[end]];
    entities.push({ entity_group: name, score: sum / group.length, word: decode(group.map((e) => e.word)), start, end });
  }
  return entities;
}

// --------------------------------------------------------------- batching
/**
 * Length-sorted batches (mbert_edge/batching.py): indices into `lengths`, longest first (ties in input order), each
 * batch at most `batchSize` texts and at most `maxTokens` padded tokens; a text longer than that gets its own batch.
 */
export function* lengthSortedBatches(lengths, batchSize, maxTokens) {
  const order = Array.from(lengths.keys()).sort((a, b) => lengths[b] - lengths[a] || a - b);
  let start = 0;
  while (start < order.length) {
    const longest = lengths[order[start]];
    const rows = Math.max(1, Math.min(batchSize, Math.floor(maxTokens / Math.max(longest, 1))));
    yield order.slice(start, start + rows);
    start += rows;
  }
}
