/**
 * A private X display (Debian's Xvfb) for desktop components that need one
 * (dunst, KDE's portal backend). Xvfb picks a free display number itself.
 */
import { startChild, type Child } from './process';

export interface Xvfb {
  /** `:<n>` */
  readonly display: string;
  stop(): Promise<void>;
}

/**
 * Starts Xvfb (1024 × 640, 24 bit, no TCP) and resolves with its display.
 * @throws Error when Xvfb (Debian package `xvfb`) is missing or reports no display within 10 s.
 */
export async function startXvfb(): Promise<Xvfb> {
  // -displayfd: Xvfb writes the display number it chose to fd 3.
  const xvfb: Child = await startChild(
    'Xvfb',
    ['-displayfd', '3', '-screen', '0', '1024x640x24', '-nolisten', 'tcp'],
    {
      stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    },
  );
  const display = await new Promise<string>((resolve, reject) => {
    let out = '';
    const fd3 = xvfb.process.stdio[3] as NodeJS.ReadableStream;
    fd3.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(`:${out.trim()}`);
    });
    setTimeout(() => reject(new Error('Xvfb did not report a display')), 10_000);
  }).catch(async (e: unknown) => {
    await xvfb.stop();
    throw e;
  });
  return { display, stop: () => xvfb.stop() };
}
