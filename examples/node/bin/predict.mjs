#!/usr/bin/env node
// node examples/node/bin/predict.mjs BUNDLE [--json] [--top-k K] [--prefix P] [--batch-size N] [--threads N]
//                                           [--precision P] [--model-file PATH] [--ids] [--offsets codepoint|utf16]
//
// Reads texts one per line on stdin (blank lines skipped) and writes one line per text, as `mbert-edge predict`
// does: with --json one JSON object per text, {"text", "embedding"} (every float32 digit) or {"text", "result"}
// (Python's shape: {label, score}, a list of them, or entities {entity_group, score, word, start, end}, whose
// start/end are code point offsets like Python's unless --offsets utf16). --ids adds the token ids the model saw.
// Errors print one `error: ...` line and exit 1; usage errors exit 2.

import { parseArgs } from 'node:util';

import { MbertEdgeError, load } from '../index.mjs';
import { isBlank } from '../lib/heads.mjs';
import { pyJson } from '../lib/pyjson.mjs';

const USAGE =
  'usage: predict.mjs BUNDLE [--json] [--top-k K] [--prefix P] [--batch-size N] [--threads N] [--precision P] ' +
  '[--model-file PATH] [--ids] [--offsets codepoint|utf16]  (texts one per line on stdin)';

function usage(message) {
  process.stderr.write(`${USAGE}\nerror: ${message}\n`);
  process.exit(2);
}

function intArg(value, name, min) {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) usage(`--${name} must be an integer >= ${min}`);
  return n;
}

function describe(result) {
  if (!Array.isArray(result)) return `${result.label} (${result.score.toFixed(3)})`;
  if (result.length && 'entity_group' in result[0]) {
    return result.map((e) => `${e.word}=${e.entity_group} (${e.score.toFixed(2)})`).join(', ');
  }
  return result.map((r) => `${r.label} (${r.score.toFixed(3)})`).join(', ') || '(none)';
}

async function main() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        json: { type: 'boolean', default: false },
        ids: { type: 'boolean', default: false },
        'top-k': { type: 'string' },
        prefix: { type: 'string' },
        'batch-size': { type: 'string' },
        threads: { type: 'string' },
        precision: { type: 'string' },
        'model-file': { type: 'string' },
        offsets: { type: 'string', default: 'codepoint' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    usage(err.message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1) usage('give exactly one BUNDLE directory');
  if (!['codepoint', 'utf16'].includes(values.offsets)) usage('--offsets must be codepoint or utf16');
  const topK = intArg(values['top-k'], 'top-k', 0) ?? 1;
  const batchSize = intArg(values['batch-size'], 'batch-size', 1) ?? 32;
  const threads = intArg(values.threads, 'threads', 1) ?? null;

  // Python reads stdin in text mode: \n, \r\n and \r end a line; lines that are only whitespace are skipped
  let input = '';
  if (!process.stdin.isTTY) {
    process.stdin.setEncoding('utf8');
    for await (const chunk of process.stdin) input += chunk;
  }
  const texts = input.split(/\r\n|\r|\n/).filter((line) => !isBlank(line));
  if (!texts.length) throw new MbertEdgeError('no texts given: pipe texts on stdin, one per line');

  const model = await load(positionals[0], {
    threads,
    precision: values.precision ?? null,
    modelFile: values['model-file'] ?? null,
    logger: { warn: (m) => process.stderr.write(`WARNING mbert_edge: ${m}\n`) },
  });
  const ids = values.ids ? await model.tokenize(texts, { prefix: values.prefix ?? null }) : null;
  const lines = [];
  if (model.task === 'feature-extraction') {
    const vectors = await model.embed(texts, { prefix: values.prefix ?? null, batchSize });
    texts.forEach((text, i) => {
      if (values.json) {
        // every float32 digit (Python's CLI rounds to 6 decimals), without float64 noise
        const obj = { text, embedding: vectors[i] };
        if (ids) obj.ids = ids[i].ids;
        lines.push(pyJson(obj));
      } else {
        const head = Array.from(vectors[i].slice(0, 6), (x) => (x >= 0 ? '+' : '') + x.toFixed(4)).join(' ');
        lines.push(`[${head} … ] dim=${vectors[i].length}  ${text}`);
      }
    });
  } else {
    const results = await model.predict(texts, { topK: topK || null, batchSize, offsets: values.offsets });
    texts.forEach((text, i) => {
      if (values.json) {
        const obj = { text, result: results[i] };
        if (ids) obj.ids = ids[i].ids;
        lines.push(pyJson(obj));
      } else lines.push(`${describe(results[i])}\t${text}`);
    });
  }
  await model.close();
  process.stdout.write(lines.length ? `${lines.join('\n')}\n` : '');
  return 0;
}

try {
  process.exitCode = await main();
} catch (err) {
  if (!(err instanceof MbertEdgeError)) throw err;
  process.stderr.write(`error: ${err.message}\n`);
  process.exitCode = 1;
}
