#!/usr/bin/env node
// Open the demo page in headless Chromium, run one query, save a screenshot, print the page's result as JSON:
//   node examples/browser/check.mjs BUNDLE --query "Is the museum open on Monday?" [--repeat 20]
//        [--screenshot docs/browser-demo.png] [--chromium /usr/bin/chromium] [--precision int8] [--timeout 240]
//        [--tokenize texts.json]   (also print the page tokenizer's ids of a JSON list of texts)
// Chromium is driven over its DevTools pipe (--remote-debugging-pipe: file descriptors 3 and 4), so nothing but
// Node and the browser is needed, and nothing listens beyond the page's own server on 127.0.0.1.

import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { startServer } from './serve.mjs';

const CANDIDATES = ['chromium-headless-shell', 'chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'];

async function findChromium(given) {
  if (given) return given;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    for (const name of CANDIDATES) {
      const p = path.join(dir, name);
      if (await fs.access(p, fs.constants.X_OK).then(() => true, () => false)) return p;
    }
  }
  throw new Error(`no Chromium found (looked for ${CANDIDATES.join(', ')} on PATH); install Debian's chromium-headless-shell`);
}

/** A DevTools protocol connection over Chromium's pipe: JSON messages separated by NUL bytes. */
class Cdp {
  constructor(proc) {
    this.proc = proc;
    this.nextId = 1;
    this.pending = new Map();
    this.listeners = [];
    let buffer = '';
    proc.stdio[4].on('data', (chunk) => {
      buffer += chunk.toString('utf8');
      let end;
      while ((end = buffer.indexOf('\0')) >= 0) {
        const msg = JSON.parse(buffer.slice(0, end));
        buffer = buffer.slice(end + 1);
        if (msg.id && this.pending.has(msg.id)) {
          const { resolve, reject } = this.pending.get(msg.id);
          this.pending.delete(msg.id);
          if (msg.error) reject(new Error(`${msg.error.message} (${msg.error.code})`));
          else resolve(msg.result);
        } else for (const f of this.listeners) f(msg);
      }
    });
  }

  send(method, params = {}, sessionId = undefined) {
    const id = this.nextId++;
    this.proc.stdio[3].write(`${JSON.stringify({ id, method, params, sessionId })}\0`);
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      query: { type: 'string', default: 'Is the museum open on Monday?' },
      repeat: { type: 'string', default: '1' },
      screenshot: { type: 'string' },
      chromium: { type: 'string' },
      precision: { type: 'string' },
      model: { type: 'string' },
      timeout: { type: 'string', default: '240' },
      width: { type: 'string', default: '900' },
      height: { type: 'string', default: '600' },
      tokenize: { type: 'string' },
    },
  });
  if (positionals.length !== 1) throw new Error('usage: check.mjs BUNDLE [--query Q] [--screenshot FILE] ...');
  const chromium = await findChromium(values.chromium);
  const { server, url } = await startServer({ bundle: positionals[0] });
  const userDir = await fs.mkdtemp(path.join(os.tmpdir(), 'mbert-edge-chromium-'));
  const args = [
    '--headless',
    '--remote-debugging-pipe',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-gpu',
    '--disable-extensions',
    '--disable-background-networking',
    '--hide-scrollbars',
    '--font-render-hinting=none',
    `--user-data-dir=${userDir}`,
    `--window-size=${values.width},${values.height}`,
  ];
  if (process.getuid?.() === 0) args.push('--no-sandbox'); // Chromium's sandbox refuses to start as root (CI containers)
  const proc = spawn(chromium, [...args, 'about:blank'], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stdio[2].on('data', (d) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  const cdp = new Cdp(proc);
  const consoleLines = [];
  cdp.listeners.push((msg) => {
    if (msg.method === 'Runtime.consoleAPICalled') {
      consoleLines.push(`${msg.params.type}: ${msg.params.args.map((a) => a.value ?? a.description).join(' ')}`);
    } else if (msg.method === 'Runtime.exceptionThrown') {
      consoleLines.push(`exception: ${msg.params.exceptionDetails.exception?.description ?? msg.params.exceptionDetails.text}`);
    }
  });
  const deadline = Date.now() + Number(values.timeout) * 1000;
  try {
    const { targetId } = await Promise.race([
      cdp.send('Target.createTarget', { url: 'about:blank' }),
      exited.then((code) => {
        throw new Error(`Chromium exited (${code}) before answering: ${stderr}`);
      }),
    ]);
    const { sessionId } = await cdp.send('Target.attachToTarget', { targetId, flatten: true });
    const send = (m, p) => cdp.send(m, p, sessionId);
    await send('Runtime.enable');
    await send('Page.enable');
    await send('Emulation.setDeviceMetricsOverride', {
      width: Number(values.width),
      height: Number(values.height),
      deviceScaleFactor: 1,
      mobile: false,
    });
    const page = new URL('browser/index.html', url);
    page.searchParams.set('q', values.query);
    page.searchParams.set('repeat', values.repeat);
    if (values.precision) page.searchParams.set('precision', values.precision);
    if (values.model) page.searchParams.set('model', values.model);
    const started = Date.now();
    await send('Page.navigate', { url: page.href });
    let result;
    for (;;) {
      const { result: r } = await send('Runtime.evaluate', {
        expression: 'JSON.stringify(window.__mbertEdge ?? null)',
        returnByValue: true,
      });
      result = JSON.parse(r.value ?? 'null');
      if (result && (result.state === 'done' || result.state === 'error')) break;
      if (Date.now() > deadline) throw new Error(`the page did not finish in ${values.timeout} s (state ${result?.state})`);
      await sleep(100);
    }
    result.wall_ms = Date.now() - started;
    if (values.tokenize && result.state === 'done') {
      // ids of more texts (a JSON file holding a list of strings), from the page's own tokenizer
      const texts = await fs.readFile(values.tokenize, 'utf8');
      const { result: r } = await send('Runtime.evaluate', {
        expression: `window.__mbertEdgeTokenize(${texts}).then(JSON.stringify)`,
        awaitPromise: true,
        returnByValue: true,
      });
      result.tokenized = JSON.parse(r.value);
    }
    await sleep(150); // let the last paint land
    if (values.screenshot) {
      const { data } = await send('Page.captureScreenshot', { format: 'png' });
      await fs.mkdir(path.dirname(path.resolve(values.screenshot)), { recursive: true });
      await fs.writeFile(values.screenshot, Buffer.from(data, 'base64'));
      result.screenshot = values.screenshot;
    }
    result.console = consoleLines;
    result.chromium = (await cdp.send('Browser.getVersion')).product;
    process.stdout.write(`${JSON.stringify(result)}\n`);
    await cdp.send('Browser.close').catch(() => {});
    return result.state === 'done' ? 0 : 1;
  } finally {
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
    await Promise.race([exited, sleep(5000)]);
    clearTimeout(timer);
    server.close();
    await fs.rm(userDir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`error: ${err.message}\n`);
    process.exit(1);
  },
);
