// The demo page: load a bundle, embed a few multilingual sentences once, then embed what the user types and rank the
// sentences by cosine similarity. URL parameters: bundle (directory URL, default ../bundle/ as served by serve.mjs),
// precision, model (a model file of the manifest), q (run this query at once), repeat (run it N times, for timing).
// State and results are published on window.__mbertEdge for the headless check (check.mjs).

import { loadBundle } from './runtime.mjs';

export const SENTENCES = [
  ['de', 'Der Zug zum Flughafen fährt alle zwanzig Minuten.'],
  ['fr', 'Ma grand-mère cultive des tomates dans son jardin.'],
  ['es', 'El museo cierra los lunes.'],
  ['ru', 'Пожалуйста, выключите телефон во время концерта.'],
  ['zh', '下了一整周的雨，河水淹没了村庄。'],
  ['hi', 'उसने सात साल की उम्र में पियानो बजाना सीखा।'],
  ['ar', 'جدتي تزرع الطماطم في حديقتها.'],
  ['ja', 'その博物館は月曜日に閉まっています。'],
];

const params = new URLSearchParams(location.search);
const state = (window.__mbertEdge = { state: 'loading', sentences: SENTENCES.map(([, t]) => t) });
const $ = (id) => document.getElementById(id);

const dot = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;

function show(ranking, bestIndex) {
  $('results').replaceChildren(
    ...ranking.map(({ index, score }) => {
      const li = document.createElement('li');
      if (index === bestIndex) li.className = 'best';
      const [lang, text] = SENTENCES[index];
      li.innerHTML = `<span class="lang">${lang}</span><span></span><span class="score"></span>`;
      li.children[1].textContent = text;
      const bar = document.createElement('div');
      bar.className = 'bar';
      bar.innerHTML = '<span></span>';
      bar.firstChild.style.width = `${Math.max(0, score) * 100}%`;
      li.children[2].append(bar, score.toFixed(3));
      return li;
    }),
  );
}

async function main() {
  const bundle = params.get('bundle') ?? '../bundle/';
  const { predictor, stats } = await loadBundle(bundle, {
    precision: params.get('precision'),
    modelFile: params.get('model'),
    wasmPaths: new URL('./node_modules/onnxruntime-web/dist/', location.href).href,
  });
  const t0 = performance.now();
  const vectors = await predictor.embed(SENTENCES.map(([, t]) => t));
  const sentencesMs = performance.now() - t0;
  const f = predictor.modelFile;
  // for the headless check: the ids this page's tokenizer gives (the texts with the model's default prefix)
  window.__mbertEdgeTokenize = async (texts) => (await predictor.tokenize(texts)).map((e) => e.ids);
  Object.assign(state, {
    state: 'ready',
    model: { file: f.path, precision: f.precision, quantization: f.quantization ?? null, task: predictor.task },
    stats: { ...stats, sentences_ms: sentencesMs },
    sentence_embeddings: vectors.map((v) => Array.from(v)),
    runtime: { crossOriginIsolated: globalThis.crossOriginIsolated, userAgent: navigator.userAgent },
  });
  $('status').textContent =
    `${f.path} (${f.precision}${f.quantization ? ` ${f.quantization}` : ''}, ${predictor.task}) · ` +
    `${mb(stats.bytes)} downloaded and verified · loaded in ` +
    `${(stats.ms.total / 1000).toFixed(2)} s · onnxruntime-web ${stats.ortVersion ?? ''} WASM, ${stats.numThreads} ` +
    `thread${stats.numThreads > 1 ? 's' : ''}`;
  const times = [];

  async function ask(query, repeat = 1) {
    let vector;
    for (let i = 0; i < repeat; i++) {
      const t = performance.now();
      vector = await predictor.embed(query);
      times.push(performance.now() - t);
    }
    const ranking = vectors.map((v, index) => ({ index, score: dot(v, vector) })).sort((a, b) => b.score - a.score);
    show(ranking, ranking[0].index);
    $('timing').textContent =
      `query embedded in ${times[times.length - 1].toFixed(1)} ms (median ${median(times).toFixed(1)} ms over ` +
      `${times.length}) · nearest: ${SENTENCES[ranking[0].index][0]}`;
    const { ids } = await predictor.tokenize(query);
    Object.assign(state, {
      state: 'done',
      query,
      ids,
      embedding: Array.from(vector),
      ranking,
      timings: { query_ms_median: median(times), query_ms: [...times] },
    });
  }

  $('ask').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = $('query').value;
    if (q.trim()) ask(q).catch(fail);
  });
  $('query').disabled = $('go').disabled = false;
  const q = params.get('q');
  if (q) {
    $('query').value = q;
    await ask(q, Number(params.get('repeat') ?? 1));
  }
}

function fail(err) {
  Object.assign(state, { state: 'error', error: `${err.name}: ${err.message}` });
  $('status').className = 'error';
  $('status').textContent = `${err.name}: ${err.message}`;
  console.error(err);
}

main().catch(fail);
