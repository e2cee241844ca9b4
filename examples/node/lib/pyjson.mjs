// JSON written the way Python's json.dumps(obj, ensure_ascii=False) writes it, so that predict.mjs --json prints the
// same lines as `mbert-edge predict --json` (embeddings excepted: every float32 digit instead of 6 decimals).

/** A float as Python's repr() writes it: shortest round-trip digits, exponent form below 1e-4 and from 1e16. */
export function pyFloat(x) {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'NaN' : x > 0 ? 'Infinity' : '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mant, e] = x.toExponential().split('e'); // shortest round-trip digits, as repr() uses
  const exp = Number(e);
  const sign = mant.startsWith('-') ? '-' : '';
  const digits = mant.replace('-', '').replace('.', '');
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  if (digits.length <= exp + 1) return `${sign}${digits}${'0'.repeat(exp + 1 - digits.length)}.0`;
  return `${sign}${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
}

/** The shortest decimal that reads back as the same float32 (at most 9 significant digits), Python-style. */
export function float32Text(x) {
  for (let p = 1; p < 9; p++) {
    const s = Number(x.toPrecision(p));
    if (Math.fround(s) === x) return pyFloat(s);
  }
  return pyFloat(Number(x.toPrecision(9)));
}

/** JSON as Python's json.dumps(obj, ensure_ascii=False) writes it: ", " and ": " separators, floats as repr(). */
export function pyJson(value, floatKeys = new Set(['score'])) {
  const enc = (v, key) => {
    if (Array.isArray(v)) return `[${v.map((x) => enc(x, null)).join(', ')}]`;
    if (v instanceof Float32Array) return `[${Array.from(v, float32Text).join(', ')}]`;
    if (v !== null && typeof v === 'object') {
      return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${enc(x, k)}`).join(', ')}}`;
    }
    if (typeof v === 'number') return floatKeys.has(key) || !Number.isInteger(v) ? pyFloat(v) : String(v);
    return JSON.stringify(v);
  };
  return enc(value, null);
}
