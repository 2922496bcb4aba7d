import { join } from 'node:path';
import { DEFAULT_SETTINGS, Settings } from '../../common/ipc/contract';
import { readJsonFile, writeJsonFile } from './json-file';

/**
 * The user's settings, `<dataDir>/settings.json` (devices by stable id,
 * push-to-talk, ringing, do-not-disturb — never secrets). Unknown or damaged
 * files fall back to the defaults; every change is written at once.
 */
export class SettingsStore {
  private current: Settings = structuredClone(DEFAULT_SETTINGS);
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly path: string) {}

  static at(dataDir: string): SettingsStore {
    return new SettingsStore(join(dataDir, 'settings.json'));
  }

  async load(onCorrupt?: (why: string) => void): Promise<Settings> {
    const stored = await readJsonFile(this.path, Settings.partial(), {}, onCorrupt);
    this.current = { ...structuredClone(DEFAULT_SETTINGS), ...stored };
    return this.get();
  }

  get(): Settings {
    return structuredClone(this.current);
  }

  /** Applies a validated partial update and persists it. Returns the new settings. */
  async update(patch: Partial<Settings>): Promise<Settings> {
    this.current = Settings.parse({ ...this.current, ...patch });
    const snapshot = this.get();
    this.writing = this.writing.then(() => writeJsonFile(this.path, snapshot)).catch(() => {});
    await this.writing;
    return this.get();
  }
}
