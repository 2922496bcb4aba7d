/**
 * Electron hardening for Parley's window (the official security checklist,
 * https://www.electronjs.org/docs/latest/tutorial/security).
 *
 * This file only imports Electron's *types*, so the URL checks below can be
 * unit-tested in plain Node without the Electron binary.
 */
import type { Session, WebContents, WebFrameMain } from 'electron';

/**
 * Content-Security-Policy of the renderer. The same string sits in a `<meta>`
 * tag of `renderer/index.html` (file:// responses carry no headers) and is set
 * as a response header for pages served over http(s) (the dev server).
 * `connect-src 'self'` also admits the dev server's same-origin HMR WebSocket.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * True when `url` is our own renderer page.
 *
 * - `file:` pages (packaged app): same path as `pageUrl`; query and hash are ignored.
 * - `http(s):` pages (electron-vite dev server): same origin as `pageUrl`.
 *
 * Anything else (about:blank, data:, another origin, an unparsable string) is untrusted.
 */
export function isOwnPageUrl(url: string, pageUrl: string): boolean {
  let actual: URL;
  let expected: URL;
  try {
    actual = new URL(url);
    expected = new URL(pageUrl);
  } catch {
    return false;
  }
  if (actual.protocol !== expected.protocol) return false;
  if (expected.protocol === 'file:') return actual.pathname === expected.pathname;
  if (expected.protocol === 'http:' || expected.protocol === 'https:') {
    return actual.origin === expected.origin;
  }
  return false;
}

/**
 * Builds the IPC sender check: an IPC message is trusted only when it comes
 * from the top-level frame of our own page. Every `ipcMain.handle` / `on`
 * handler calls this before looking at its arguments.
 *
 * @param pageUrl the URL the window loaded (file:// in production, the dev
 *   server's http:// URL in development)
 */
export function makeSenderCheck(pageUrl: string): (frame: WebFrameMain | null) => boolean {
  return function isTrustedSender(frame: WebFrameMain | null): boolean {
    if (!frame || frame.parent !== null) return false;
    return isOwnPageUrl(frame.url, pageUrl);
  };
}

/**
 * Denies every permission request and check (microphone, camera,
 * notifications, HID, serial, USB …): the renderer never needs them, because
 * the main process owns the audio devices.
 */
export function denyAllPermissions(session: Session): void {
  session.setPermissionRequestHandler((_contents, _permission, callback) => callback(false));
  session.setPermissionCheckHandler(() => false);
  session.setDevicePermissionHandler(() => false);
  session.setDisplayMediaRequestHandler((_request, callback) => callback({}));
}

/**
 * Sets {@link CONTENT_SECURITY_POLICY} on every http(s) response of
 * `session` that does not already carry one (the dev server's pages).
 */
export function enforceCsp(session: Session): void {
  session.webRequest.onHeadersReceived((details, callback) => {
    const headers = { ...details.responseHeaders };
    const hasCsp = Object.keys(headers).some((k) => k.toLowerCase() === 'content-security-policy');
    if (!hasCsp) headers['Content-Security-Policy'] = [CONTENT_SECURITY_POLICY];
    callback({ responseHeaders: headers });
  });
}

/**
 * Locks down a WebContents: no navigation away from the loaded page, no new
 * windows, no `<webview>`.
 */
export function lockDownContents(contents: WebContents): void {
  contents.on('will-navigate', (event) => event.preventDefault());
  contents.on('will-redirect', (event) => event.preventDefault());
  contents.on('will-attach-webview', (event) => event.preventDefault());
  contents.setWindowOpenHandler(() => ({ action: 'deny' }));
}
