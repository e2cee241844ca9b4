#!/usr/bin/env node
// A tiny static server for the demo page, on 127.0.0.1 only:
//   node examples/browser/serve.mjs BUNDLE [--port 8000]   then open http://127.0.0.1:8000/browser/
// It serves examples/ at / (the page, ../node/lib shared with the Node module, the npm files) and the bundle directory
// at /bundle/. It sends the two headers that make the page cross-origin isolated (COOP/COEP), which onnxruntime-web
// needs for several WASM threads; any static host works the same way with those headers (without them: one thread).

import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.css': 'text/css',
};

function inside(root, rel) {
  const p = path.resolve(root, `.${path.posix.normalize(`/${rel}`)}`);
  return p === root || p.startsWith(root + path.sep) ? p : null;
}

/** Start the server; resolves to {server, url} once it listens (port 0: any free port). */
export function startServer({ bundle, port = 0, host = '127.0.0.1' }) {
  const bundleRoot = path.resolve(bundle);
  const server = http.createServer(async (req, res) => {
    const { pathname } = new URL(req.url, 'http://localhost');
    let rel = decodeURIComponent(pathname);
    let file = rel.startsWith('/bundle/') ? inside(bundleRoot, rel.slice('/bundle/'.length)) : inside(EXAMPLES, rel);
    if (file && rel.endsWith('/')) file = path.join(file, 'index.html');
    const stat = file && (await fs.stat(file).catch(() => null));
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cache-Control': 'no-store',
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, headers).end();
      return;
    }
    if (!stat?.isFile()) {
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' }).end(`not found: ${rel}\n`);
      return;
    }
    res.writeHead(200, {
      ...headers,
      'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream',
      'Content-Length': stat.size,
    });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve({ server, url: `http://${host}:${server.address().port}/` }));
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { port: { type: 'string', default: '8000' } } });
  if (positionals.length !== 1) {
    process.stderr.write('usage: serve.mjs BUNDLE [--port 8000]\n');
    process.exit(2);
  }
  const { url } = await startServer({ bundle: positionals[0], port: Number(values.port) });
  process.stdout.write(`serving ${positionals[0]} on ${url}browser/ (127.0.0.1 only; Ctrl-C stops)\n`);
}
