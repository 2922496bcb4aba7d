/**
 * Plots drawn by the benchmarks: a Vega-Lite spec rendered to SVG by Vega (no
 * canvas needed in Node), then rasterised to PNG by headless Chromium (already
 * a benchmark dependency), so docs/BENCHMARKS.md can show a picture beside
 * its tables.
 *
 * `node bench/plot.ts <delays.json> <out.png>` redraws the call plot from the
 * raw delays a `npm run bench` run saved beside it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parse as vegaParse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { launchChromium } from '../test/harness/chromium';

/** One engine's mouth-to-ear delays (ms, one per detected click) under one packet size and condition. */
export interface DelaySeries {
  engine: string;
  condition: string;
  packetMs: number;
  delaysMs: number[];
}

/**
 * Draws the mouth-to-ear distribution of every (packet size, condition, engine)
 * as a box plot (box: p25–p75, line: median, whiskers: min–max) over the
 * individual clicks, one panel per packet size, and writes it as a PNG.
 * Throws if Chromium cannot be launched or the spec does not render.
 */
export async function drawDelayPlot(series: DelaySeries[], pngPath: string, title: string): Promise<void> {
  const values = series.flatMap((s) =>
    s.delaysMs.map((d) => ({ run: `${s.condition} · ${s.engine}`, engine: s.engine, packets: `${s.packetMs} ms packets`, delay: d })),
  );
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, fontSize: 14 },
    data: { values },
    facet: {
      row: { field: 'packets', type: 'nominal', title: null, sort: 'descending', header: { labelFontSize: 13, labelAngle: 0, labelAlign: 'left' } },
    },
    spec: {
      width: 640,
      height: { step: 26 },
      layer: [
        {
          mark: { type: 'boxplot', extent: 'min-max', size: 16, opacity: 0.55 },
          encoding: {
            y: { field: 'run', type: 'nominal', title: null, sort: null, axis: { labelLimit: 0 } },
            x: { field: 'delay', type: 'quantitative', title: 'mouth-to-ear delay (ms)', scale: { zero: true } },
            color: { field: 'engine', type: 'nominal', title: 'engine' },
          },
        },
        {
          mark: { type: 'tick', thickness: 1, size: 10, opacity: 0.6, color: '#222' },
          encoding: {
            y: { field: 'run', type: 'nominal', sort: null },
            x: { field: 'delay', type: 'quantitative' },
          },
        },
      ],
    },
    config: { background: 'white', font: 'DejaVu Sans, sans-serif' },
  };
  const view = new View(vegaParse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  const size = /width="(\d+(?:\.\d+)?)" height="(\d+(?:\.\d+)?)"/.exec(svg);
  const viewport = { width: Math.ceil(Number(size?.[1] ?? 1200)), height: Math.ceil(Number(size?.[2] ?? 900)) };
  const chromium = await launchChromium();
  try {
    const page = await chromium.browser.newPage({ deviceScaleFactor: 2, viewport });
    await page.setContent(`<!doctype html><html><body style="margin:0;background:#fff">${svg}</body></html>`);
    const box = await page.locator('svg').first().boundingBox();
    if (!box) throw new Error('the plot did not render');
    writeFileSync(pngPath, await page.screenshot({ clip: { x: 0, y: 0, width: Math.ceil(box.width), height: Math.ceil(box.height) } }));
  } finally {
    await chromium.close();
  }
}

if (process.argv[1]?.endsWith('plot.ts') && process.argv.length >= 4) {
  const series = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as DelaySeries[];
  drawDelayPlot(series, process.argv[3]!, process.argv[4] ?? 'Mouth-to-ear delay per click').catch((e: unknown) => {
    console.error(`plot failed: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}
