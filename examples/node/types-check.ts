// Compiled (never run) by `tsc -p examples/node` in the tests: the public API as a TypeScript app uses it.
import {
  BundleIntegrityError,
  InvalidInputError,
  MbertEdgeError,
  type Entity,
  type LabelScore,
  load,
} from 'mbert-edge-node';

export async function example(): Promise<void> {
  const encoder = await load('bundles/e5-small', { threads: 2 });
  const one: Float32Array = await encoder.embed('Where is the station?');
  const many: Float32Array[] = await encoder.embed(['Hallo Welt', 'Bonjour'], { prefix: 'passage: ' });
  console.log(one.length, many.length, encoder.embeddingDim, encoder.manifest.embedding?.default_prefix);

  const classifier = await load('bundles/sentiment', { precision: 'fp32', truncation: false });
  const best = (await classifier.predict('Das Essen war großartig!')) as LabelScore;
  const all = (await classifier.predict(['a', 'b'], { topK: null })) as LabelScore[][];
  console.log(best.label, best.score, all.length, classifier.labels);

  const ner = await load('bundles/ner', { verify: true, logger: null });
  const entities = (await ner.predict('Angela Merkel besuchte Paris.', { offsets: 'utf16' })) as Entity[];
  for (const e of entities) console.log(e.entity_group, e.word, e.start, e.end, e.score);
  const { ids, tokens } = await ner.tokenize('Paris');
  console.log(ids.length === tokens.length, ner.modelFile.path, ner.modelFile.quantization);

  try {
    await load('missing');
  } catch (err) {
    if (err instanceof BundleIntegrityError || err instanceof InvalidInputError) throw err;
    if (!(err instanceof MbertEdgeError)) throw err;
  }
  await Promise.all([encoder.close(), classifier.close(), ner.close()]);
}
