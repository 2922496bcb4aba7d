/**
 * Debian's Chromium driven by Playwright (playwright-core, no downloaded
 * browser), set up as an independent WebRTC peer on loopback (DESIGN.md facts):
 * `--allow-loopback-in-peer-connection`, fake media UI, and no background
 * networking (this machine has no internet).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { randomUUID } from 'node:crypto';

export const CHROMIUM_PATH = process.env.PARLEY_CHROMIUM ?? '/usr/bin/chromium';

export interface ChromiumOptions {
  /**
   * Use fake capture devices (default true). With `fakeAudioWav` the fake
   * microphone loops that 48 kHz WAV (`--use-file-for-fake-audio-capture`);
   * without it, it beeps. With `false`, the real default devices are used
   * (PulseAudio's, chosen by `env`).
   */
  fakeDevices?: boolean;
  fakeAudioWav?: string;
  /** Extra environment for the browser (e.g. PULSE_SERVER, PULSE_SOURCE, PULSE_SINK). */
  env?: Record<string, string>;
}

export interface RunningChromium {
  browser: Browser;
  /** Process ids of this instance's browser and all its children (renderer, audio, network…). */
  pids(): number[];
  close(): Promise<void>;
}

/** Launches headless Chromium with its own profile folder. */
export async function launchChromium(options: ChromiumOptions | string = {}): Promise<RunningChromium> {
  const o: ChromiumOptions = typeof options === 'string' ? { fakeAudioWav: options } : options;
  const marker = randomUUID();
  const args = [
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--allow-loopback-in-peer-connection',
    '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
    // Playwright owns --user-data-dir; an unknown switch of our own marks this
    // instance's browser process (Chromium ignores it) so its tree can be found.
    `--parley-instance=${marker}`,
  ];
  if (o.fakeDevices !== false) args.push('--use-fake-device-for-media-stream');
  if (o.fakeAudioWav) args.push(`--use-file-for-fake-audio-capture=${o.fakeAudioWav}`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    // Playwright mutes audio output by default; a device peer must be heard.
    ignoreDefaultArgs: o.fakeDevices === false ? ['--mute-audio'] : [],
    args,
    env: { ...process.env, ...o.env } as Record<string, string>,
  });
  return {
    browser,
    pids: () => processTree(marker),
    close: () => browser.close(),
  };
}

/** Pids of the Chromium whose command line carries `marker`, and of all its descendants. */
function processTree(marker: string): number[] {
  const parent = new Map<number, number>();
  const roots: number[] = [];
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      parent.set(pid, Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`--parley-instance=${marker}`)) roots.push(pid);
    } catch {
      // the process ended while we looked
    }
  }
  const tree = new Set(roots);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of parent) {
      if (!tree.has(pid) && tree.has(ppid)) {
        tree.add(pid);
        grew = true;
      }
    }
  }
  return [...tree];
}
