// Draws resources/icon.png (512×512 RGBA): a blue rounded square with a white
// speech bubble holding four sound bars. No dependencies: shapes are signed
// distance functions, anti-aliased by 4×4 supersampling, written as a PNG with
// node:zlib. Run: node resources/make-icon.mjs
import { writeFileSync } from 'node:fs';
import { encodePng } from './png.mjs';

const SIZE = 512;
const BLUE = [47, 111, 237];
const WHITE = [255, 255, 255];

/** Signed distance to a rounded rectangle (negative inside). */
function roundRect(x, y, x0, y0, x1, y1, r) {
  const cx = (x0 + x1) / 2,
    cy = (y0 + y1) / 2;
  const hx = (x1 - x0) / 2 - r,
    hy = (y1 - y0) / 2 - r;
  const dx = Math.abs(x - cx) - hx,
    dy = Math.abs(y - cy) - hy;
  return Math.hypot(Math.max(dx, 0), Math.max(dy, 0)) + Math.min(Math.max(dx, dy), 0) - r;
}

/** True inside the triangle (a, b, c). */
function inTriangle(x, y, [ax, ay], [bx, by], [cx, cy]) {
  const s = (px, py, qx, qy, rx, ry) => (px - rx) * (qy - ry) - (qx - rx) * (py - ry);
  const d1 = s(x, y, ax, ay, bx, by),
    d2 = s(x, y, bx, by, cx, cy),
    d3 = s(x, y, cx, cy, ax, ay);
  return !((d1 < 0 || d2 < 0 || d3 < 0) && (d1 > 0 || d2 > 0 || d3 > 0));
}

const BARS = [
  [166, 208, 194, 256],
  [214, 178, 242, 286],
  [262, 156, 290, 308],
  [310, 194, 338, 270],
];

/** Colour (or null for transparent) at a sub-pixel position. */
function sample(x, y) {
  if (roundRect(x, y, 16, 16, 496, 496, 96) > 0) return null;
  const bubble =
    roundRect(x, y, 96, 120, 416, 344, 56) <= 0 ||
    inTriangle(x, y, [160, 320], [160, 420], [260, 330]);
  if (!bubble) return BLUE;
  return BARS.some(([x0, y0, x1, y1]) => roundRect(x, y, x0, y0, x1, y1, 14) <= 0) ? BLUE : WHITE;
}

const SS = 4;
const raw = Buffer.alloc(SIZE * (SIZE * 4 + 1));
for (let py = 0; py < SIZE; py++) {
  raw[py * (SIZE * 4 + 1)] = 0; // filter: none
  for (let px = 0; px < SIZE; px++) {
    let r = 0,
      g = 0,
      b = 0,
      a = 0;
    for (let sy = 0; sy < SS; sy++) {
      for (let sx = 0; sx < SS; sx++) {
        const c = sample(px + (sx + 0.5) / SS, py + (sy + 0.5) / SS);
        if (c) {
          r += c[0];
          g += c[1];
          b += c[2];
          a++;
        }
      }
    }
    const o = py * (SIZE * 4 + 1) + 1 + px * 4;
    if (a) {
      raw[o] = r / a;
      raw[o + 1] = g / a;
      raw[o + 2] = b / a;
    }
    raw[o + 3] = Math.round((a / (SS * SS)) * 255);
  }
}

const png = encodePng(SIZE, SIZE, raw);
writeFileSync(new URL('./icon.png', import.meta.url), png);
console.log(`resources/icon.png: ${SIZE}x${SIZE}, ${png.length} bytes`);
