import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { z } from 'zod';

/**
 * Reads a JSON file and validates it. A missing file gives `fallback`; a file
 * that is not valid JSON or does not match the schema gives `fallback` too and
 * is reported through `onCorrupt` (the caller decides what the user sees) —
 * a damaged settings or history file must never stop Parley from starting.
 */
export async function readJsonFile<S extends z.ZodType>(
  path: string,
  schema: S,
  fallback: z.output<S>,
  onCorrupt?: (why: string) => void,
): Promise<z.output<S>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') onCorrupt?.(`cannot read ${path}: ${(e as Error).message}`);
    return fallback;
  }
  try {
    const parsed = schema.safeParse(JSON.parse(text));
    if (parsed.success) return parsed.data;
    onCorrupt?.(`${path} does not have the expected shape; using defaults`);
  } catch {
    onCorrupt?.(`${path} is not valid JSON; using defaults`);
  }
  return fallback;
}

/**
 * Writes JSON atomically (temporary file + rename) with mode 0600 in a 0700
 * folder, so a crash never leaves half a file and other users cannot read it.
 */
export async function writeJsonFile(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(value, null, 2) + '\n', { mode: 0o600 });
  await rename(tmp, path);
}
