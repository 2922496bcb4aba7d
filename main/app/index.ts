/**
 * Parley's Electron shell (main process entry, built to out/main/index.js).
 *
 * Deliberately thin: one hardened window. The softphone itself lives in
 * main/core and main/media; the typed IPC wiring arrives with the desktop-app
 * issue, and every handler it adds checks its sender with `isTrustedSender`.
 */
import { app, BrowserWindow, session, type WebFrameMain } from 'electron';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { denyAllPermissions, enforceCsp, lockDownContents, makeSenderCheck } from './security';

/** Dev server URL set by `electron-vite dev`; absent in a packaged build. */
const devServerUrl = process.env['ELECTRON_RENDERER_URL'];

const rendererIndex = fileURLToPath(new URL('../renderer/index.html', import.meta.url));
const preloadScript = fileURLToPath(new URL('../preload/index.cjs', import.meta.url));

/** The URL of our own page: the only origin whose IPC messages are trusted. */
const pageUrl = devServerUrl ?? pathToFileURL(rendererIndex).href;

/** True when an IPC message comes from the top-level frame of our own page. */
export const isTrustedSender: (frame: WebFrameMain | null) => boolean = makeSenderCheck(pageUrl);

// Every renderer runs in Chromium's sandbox, whatever a window asks for.
app.enableSandbox();

app.on('web-contents-created', (_event, contents) => lockDownContents(contents));

function createWindow(): BrowserWindow {
  const win = new BrowserWindow({
    width: 420,
    height: 680,
    minWidth: 360,
    minHeight: 480,
    title: 'Parley',
    show: false,
    webPreferences: {
      preload: preloadScript,
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
      nodeIntegrationInWorker: false,
      nodeIntegrationInSubFrames: false,
      webSecurity: true,
      allowRunningInsecureContent: false,
      experimentalFeatures: false,
      navigateOnDragDrop: false,
      webviewTag: false,
      spellcheck: false,
    },
  });
  win.once('ready-to-show', () => win.show());
  if (devServerUrl) void win.loadURL(devServerUrl);
  else void win.loadFile(rendererIndex);
  return win;
}

void app.whenReady().then(() => {
  denyAllPermissions(session.defaultSession);
  enforceCsp(session.defaultSession);
  createWindow();
  app.on('activate', () => {
    if (BrowserWindow.getAllWindows().length === 0) createWindow();
  });
});

app.on('window-all-closed', () => {
  if (process.platform !== 'darwin') app.quit();
});
