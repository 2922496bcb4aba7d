// Draws the tray images resources/tray/<state>.png (32×32 RGBA): a disc in
// the state's colour with a white glyph — idle (blue, sound bars), offline
// (grey, bars), ringing (green, concentric waves), in-call (green, bars),
// muted (red, bars with a slash), dnd (red, a bar). Anti-aliased by 4×4
// supersampling. Run: node resources/make-tray.mjs
import { mkdirSync, writeFileSync } from 'node:fs';
import { encodePng } from './png.mjs';

const SIZE = 32;
const SS = 4;
const COLORS = {
  idle: [47, 111, 237],
  offline: [128, 134, 148],
  ringing: [29, 150, 86],
  'in-call': [29, 150, 86],
  muted: [205, 52, 45],
  dnd: [205, 52, 45],
};

const bars = (x, y) =>
  [
    [10, 13, 19],
    [14.5, 9, 23],
    [19, 11, 21],
    [23.5, 14, 18],
  ].some(([cx, y0, y1]) => Math.abs(x - cx) < 1.4 && y > y0 && y < y1);
const waves = (x, y) => {
  const d = Math.hypot(x - 16, y - 16);
  return d < 3.2 || (d > 6 && d < 8) || (d > 10.5 && d < 12.5);
};
const GLYPHS = {
  idle: bars,
  offline: bars,
  ringing: waves,
  'in-call': bars,
  muted: (x, y) => (bars(x, y) && Math.abs(x - y) > 2.2) || Math.abs(x - y) < 1.2,
  dnd: (x, y) => Math.abs(y - 16) < 2 && Math.abs(x - 16) < 8,
};

mkdirSync(new URL('./tray/', import.meta.url), { recursive: true });
for (const [name, color] of Object.entries(COLORS)) {
  const raw = Buffer.alloc((SIZE * 4 + 1) * SIZE);
  for (let py = 0; py < SIZE; py++) {
    raw[py * (SIZE * 4 + 1)] = 0;
    for (let px = 0; px < SIZE; px++) {
      let r = 0,
        g = 0,
        b = 0,
        a = 0;
      for (let sy = 0; sy < SS; sy++)
        for (let sx = 0; sx < SS; sx++) {
          const x = px + (sx + 0.5) / SS,
            y = py + (sy + 0.5) / SS;
          if (Math.hypot(x - 16, y - 16) > 15.5) continue;
          const c = GLYPHS[name](x, y) ? [255, 255, 255] : color;
          r += c[0];
          g += c[1];
          b += c[2];
          a += 1;
        }
      const o = py * (SIZE * 4 + 1) + 1 + px * 4;
      const n = Math.max(a, 1);
      raw[o] = Math.round(r / n);
      raw[o + 1] = Math.round(g / n);
      raw[o + 2] = Math.round(b / n);
      raw[o + 3] = Math.round((a / (SS * SS)) * 255);
    }
  }
  writeFileSync(new URL(`./tray/${name}.png`, import.meta.url), encodePng(SIZE, SIZE, raw));
}
console.log(`resources/tray: ${Object.keys(COLORS).join(', ')} (${SIZE}x${SIZE})`);
