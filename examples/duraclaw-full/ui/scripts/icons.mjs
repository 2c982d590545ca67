// Draws the app icons (public/icons/*.png) from the favicon's shape: the
// white "A" stroke on the accent colour. Deterministic: the same script
// writes the same bytes. Run: node scripts/icons.mjs
import { writeFileSync, mkdirSync } from 'node:fs';
import { deflateSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const out = join(dirname(fileURLToPath(import.meta.url)), '..', 'public', 'icons');
const ACCENT = [0xc2, 0x41, 0x0c];
const WHITE = [0xff, 0xff, 0xff];

// The favicon's path in its 32×32 box: two cubic curves and a bar.
const CURVES = [
  [[9, 23], [11, 15], [14, 10], [16, 9]],
  [[16, 9], [18, 10], [21, 15], [23, 23]],
  [[12, 17], [14.7, 17], [17.3, 17], [20, 17]],
];
const STROKE = 2.6;

function bezier([p0, p1, p2, p3], t) {
  const u = 1 - t;
  const a = u * u * u, b = 3 * u * u * t, c = 3 * u * t * t, d = t * t * t;
  return [a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0], a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]];
}

const SEGMENTS = [];
for (const curve of CURVES) {
  let prev = bezier(curve, 0);
  for (let i = 1; i <= 48; i++) {
    const next = bezier(curve, i / 48);
    SEGMENTS.push([prev, next]);
    prev = next;
  }
}

function distance([x, y], [[ax, ay], [bx, by]]) {
  const dx = bx - ax, dy = by - ay;
  const len = dx * dx + dy * dy;
  const t = len ? Math.max(0, Math.min(1, ((x - ax) * dx + (y - ay) * dy) / len)) : 0;
  return Math.hypot(x - (ax + t * dx), y - (ay + t * dy));
}

/** RGBA pixels of a `size` icon: rounded corners unless `maskable` (full
 * bleed, the glyph inside the safe zone). */
function draw(size, maskable) {
  const px = new Uint8Array(size * size * 4);
  const glyph = maskable ? 0.62 : 1; // share of the 32 box the glyph spans
  const scale = (32 / size) / glyph;
  const offset = (32 - 32 * glyph) / 2 / glyph;
  const radius = maskable ? 0 : (7 / 32) * size;
  const half = STROKE / 2;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      // Coverage of the rounded square (anti-aliased by distance).
      let bg = 1;
      if (radius) {
        const cx = Math.min(Math.max(x + 0.5, radius), size - radius);
        const cy = Math.min(Math.max(y + 0.5, radius), size - radius);
        const d = Math.hypot(x + 0.5 - cx, y + 0.5 - cy);
        bg = Math.max(0, Math.min(1, radius - d + 0.5));
      }
      const p = [(x + 0.5) * scale - offset, (y + 0.5) * scale - offset];
      let d = Infinity;
      for (const s of SEGMENTS) d = Math.min(d, distance(p, s));
      const fg = Math.max(0, Math.min(1, (half - d) / scale + 0.5));
      const i = (y * size + x) * 4;
      for (let k = 0; k < 3; k++) px[i + k] = Math.round(ACCENT[k] * (1 - fg) + WHITE[k] * fg);
      px[i + 3] = Math.round(255 * bg);
    }
  }
  return px;
}

const CRC = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}
function png(size, rgba) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 6; // RGBA
  const rows = Buffer.alloc(size * (size * 4 + 1));
  for (let y = 0; y < size; y++) {
    rows[y * (size * 4 + 1)] = 0;
    Buffer.from(rgba.buffer, y * size * 4, size * 4).copy(rows, y * (size * 4 + 1) + 1);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(rows, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

mkdirSync(out, { recursive: true });
for (const [name, size, maskable] of [
  ['icon-192.png', 192, false],
  ['icon-512.png', 512, false],
  ['maskable-192.png', 192, true],
  ['maskable-512.png', 512, true],
]) {
  writeFileSync(join(out, name), png(size, draw(size, maskable)));
}
console.log(`icons written to ${out}`);
