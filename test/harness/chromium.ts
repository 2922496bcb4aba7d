/**
 * Debian's Chromium driven by Playwright (playwright-core, no downloaded
 * browser), set up as an independent WebRTC peer on loopback (DESIGN.md facts):
 * `--allow-loopback-in-peer-connection`, fake media UI and devices, and no
 * background networking (this machine has no internet).
 */
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM_PATH = process.env.PARLEY_CHROMIUM ?? '/usr/bin/chromium';

/**
 * Launches headless Chromium.
 * @param fakeAudioWav optional 48 kHz WAV that the fake microphone plays
 *   (`--use-file-for-fake-audio-capture`); without it the fake device beeps.
 */
export async function launchChromium(fakeAudioWav?: string): Promise<Browser> {
  const args = [
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--allow-loopback-in-peer-connection',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
  ];
  if (fakeAudioWav) args.push(`--use-file-for-fake-audio-capture=${fakeAudioWav}`);
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args });
}
