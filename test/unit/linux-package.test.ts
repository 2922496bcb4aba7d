/**
 * The Linux package's desktop entry and metadata as `npm run dist` will write
 * them: the .desktop file is computed by electron-builder's own generator
 * (app-builder-lib's LinuxTargetHelper.computeDesktopEntry) from our
 * electron-builder.yml and package.json, then checked with Debian's
 * desktop-file-validate (desktop-file-utils). Building the deb itself needs
 * the Electron binary (and electron-builder's fpm download), neither of which
 * this machine can fetch: `scripts/check-deb.sh dist/*.deb` checks a built one
 * with dpkg-deb where it exists.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(import.meta.url);
type Config = {
  productName: string;
  protocols?: { schemes: string[] }[];
  linux: Record<string, unknown> & { mimeTypes?: string[]; desktop?: { entry?: Record<string, string> } };
  deb: { depends: string[] };
};
const { getConfig } = require('app-builder-lib/out/util/config/config') as {
  getConfig(projectDir: string, configPath: string | null, fromOptions: null): Promise<Config>;
};
const { LinuxTargetHelper } = require('app-builder-lib/out/targets/LinuxTargetHelper') as {
  LinuxTargetHelper: new (packager: unknown) => { computeDesktopEntry(options: unknown, exec?: string, extra?: unknown): Promise<string> };
};
const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { name: string; description: string; version: string; desktopName?: string };

/** The .desktop file electron-builder writes for the deb and the AppImage. */
async function desktopEntry(): Promise<{ text: string; config: Config }> {
  const config = await getConfig(REPO_ROOT, null, null);
  // The parts of electron-builder's packager that the generator reads, filled from our files
  // (the packager itself needs the Electron binary to exist).
  const packager = {
    appInfo: { productName: config.productName, sanitizedProductName: config.productName, description: pkg.description, version: pkg.version },
    executableName: pkg.name,
    info: { metadata: pkg },
    fileAssociations: [],
    config,
    platformSpecificBuildOptions: config.linux,
  };
  return { text: await new LinuxTargetHelper(packager).computeDesktopEntry(config.linux), config };
}

function validate(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'parley-desktop-'));
  try {
    const file = join(dir, 'parley.desktop');
    writeFileSync(file, text);
    return execFileSync('desktop-file-validate', [file], { encoding: 'utf8' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('the Linux package (electron-builder.yml)', () => {
  it('has a desktop entry that desktop-file-validate accepts without a warning or hint', async () => {
    const { text } = await desktopEntry();
    expect(validate(text)).toBe('');
  });

  it('opens parley:// links (MimeType x-scheme-handler/parley, once) and passes them on the command line (%U)', async () => {
    const { text } = await desktopEntry();
    const mime = /^MimeType=(.*)$/m.exec(text)?.[1] ?? '';
    expect(mime.split(';').filter((m) => m === 'x-scheme-handler/parley')).toHaveLength(1);
    expect(/^Exec=(.*)$/m.exec(text)?.[1]).toBe('/opt/Parley/parley %U');
    expect(/^Categories=(.*)$/m.exec(text)?.[1]).toBe('Network;Telephony;');
    expect(/^StartupWMClass=(.*)$/m.exec(text)?.[1]).toBe('Parley');
  });

  it('depends on what the app loads at run time (keychain, PulseAudio/ALSA, voice processing, notifications over D-Bus)', async () => {
    const { config } = await desktopEntry();
    for (const dep of ['libsecret-1-0', 'libpulse0', 'libasound2t64 | libasound2', 'libwebrtc-audio-processing1', 'pulseaudio-utils', 'libgtk-3-0', 'libnss3']) {
      expect(config.deb.depends).toContain(dep);
    }
    // The 512 × 512 icon electron-builder turns into the hicolor set.
    const icon = readFileSync(join(REPO_ROOT, 'resources/icon.png'));
    expect(icon.readUInt32BE(16)).toBe(512);
    expect(icon.readUInt32BE(20)).toBe(512);
  });
});
