/**
 * Where the renderer's page comes from. `electron-vite dev` sets
 * `ELECTRON_RENDERER_URL` (its Vite dev server, e.g. http://localhost:5173)
 * so that development gets hot reload; a packaged Parley must never follow
 * it — anyone who can set an environment variable for the app (a launcher, a
 * .desktop file, a shell profile) could otherwise load their own page with
 * Parley's preload and IPC trust. Pure (no electron): main/app/index.ts passes
 * `app.isPackaged` and `process.env`.
 */

/** The decision: a dev server URL to load, or the packaged files (with why the variable was ignored, for the log). */
export type RendererSource = { kind: 'dev-server'; url: string } | { kind: 'files'; ignored?: string };

/** Hosts a development server may run on: this computer only. */
const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/**
 * Chooses the renderer's source.
 * @param env the process environment (only `ELECTRON_RENDERER_URL` is read).
 * @param isPackaged Electron's `app.isPackaged`: true in an installed app.
 * @returns `files` whenever packaged (with `ignored` set if the variable was
 *   present), or when the variable is absent or not an http(s) URL on
 *   localhost / 127.0.0.1 / [::1]; `dev-server` with the URL otherwise.
 */
export function rendererSource(env: Readonly<Record<string, string | undefined>>, isPackaged: boolean): RendererSource {
  const raw = env['ELECTRON_RENDERER_URL'];
  if (!raw) return { kind: 'files' };
  if (isPackaged) return { kind: 'files', ignored: 'ELECTRON_RENDERER_URL is ignored in a packaged app' };
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { kind: 'files', ignored: 'ELECTRON_RENDERER_URL is not a URL' };
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || !LOOPBACK.has(url.hostname) || url.username || url.password) {
    return { kind: 'files', ignored: 'ELECTRON_RENDERER_URL must be an http(s) URL on this computer (localhost, 127.0.0.1, [::1])' };
  }
  return { kind: 'dev-server', url: raw };
}
