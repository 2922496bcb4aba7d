/**
 * Parley's Electron shell (main process entry, built to out/main/index.js) —
 * the only code that imports `electron`. The softphone itself is the
 * Softphone of main/core (the same one the development bridge drives);
 * this file gives it a desktop:
 *
 * - one hardened window (sandbox, context isolation, CSP, navigation and new
 *   windows denied, every permission denied) and the typed IPC (ipc.ts);
 * - a single-instance lock; `parley://call/<user>` deep links, each confirmed
 *   in a dialog that names the callee, Cancel by default (deep-link.ts);
 * - a tray icon whose image and tooltip follow idle / ringing / in call /
 *   muted (tray-state.ts), with Open, Do not disturb and Quit;
 * - an incoming call opens Parley's own small always-on-top call window with
 *   Accept and Decline, and raises an OS notification (with actions where the
 *   platform has them); the ringtone plays through main's audio path;
 * - global push-to-talk through uiohook-napi (ptt-key.ts fails safe to muted);
 * - closing the window keeps Parley in the tray; quitting hangs up first.
 */
import { app, BrowserWindow, type BrowserWindowConstructorOptions, dialog, Menu, nativeImage, Notification, session, Tray, type WebFrameMain } from 'electron';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { UiCall } from '../../common/ipc/contract';
import { keychainStore } from '../core/keychain-store';
import { Softphone } from '../core/softphone';
import { LocalAudio } from '../media/platform';
import { AudioRouter, logDeviceEvents } from '../media/audio-router';
import { hookSupport, keycodeOf, startKeyHook, type KeyHook } from '../../native/hotkeys';
import { callConfirmation, confirmedCallee, deepLinkFromArgv, DeepLinkGate, parseDeepLink, type DeepLink } from './deep-link';
import { registerIpc } from './ipc';
import { rendererSource } from './renderer-url';
import { PttKey } from './ptt-key';
import { startLinuxDesktop, type LinuxDesktop } from './linux/desktop';
import { PortalPushToTalk } from './linux/global-shortcuts';
import { denyAllPermissions, enforceCsp, lockDownContents, makeSenderCheck } from './security';
import { trayState, type TrayImage } from './tray-state';

/**
 * Dev server URL set by `electron-vite dev`; never followed by a packaged app
 * (renderer-url.ts), whatever the environment says.
 */
const rendererChoice = rendererSource(process.env, app.isPackaged);
if (rendererChoice.kind === 'files' && rendererChoice.ignored) console.warn(`[app] ${rendererChoice.ignored}; loading the packaged renderer`);
const devServerUrl = rendererChoice.kind === 'dev-server' ? rendererChoice.url : undefined;

const rendererIndex = fileURLToPath(new URL('../renderer/index.html', import.meta.url));
const preloadScript = fileURLToPath(new URL('../preload/index.cjs', import.meta.url));

/** The URL of our own page: the only origin whose IPC messages are trusted. */
const pageUrl = devServerUrl ?? pathToFileURL(rendererIndex).href;

/** True when an IPC message comes from the top-level frame of our own page. */
export const isTrustedSender: (frame: WebFrameMain | null) => boolean = makeSenderCheck(pageUrl);

/** A file of resources/<folder> (extraResources in a package, the repository's resources/ in development). */
function resourcePath(folder: 'tray' | 'sounds', file: string): string {
  const packaged = join(process.resourcesPath ?? '', folder, file);
  return existsSync(packaged) ? packaged : fileURLToPath(new URL(`../../resources/${folder}/${file}`, import.meta.url));
}

/** Tray images: resources/tray/<image>.png. */
const trayImagePath = (image: TrayImage): string => resourcePath('tray', `${image}.png`);

// Every renderer runs in Chromium's sandbox, whatever a window asks for.
app.enableSandbox();
app.on('web-contents-created', (_event, contents) => lockDownContents(contents));

if (!app.requestSingleInstanceLock()) {
  app.quit();
} else {
  if (process.defaultApp && process.argv[1]) {
    app.setAsDefaultProtocolClient('parley', process.execPath, [process.argv[1]]);
  } else {
    app.setAsDefaultProtocolClient('parley');
  }
  void app.whenReady().then(start);
}

/**
 * Every window of Parley is made here, with one set of hardened
 * webPreferences written out as a literal (so that a scanner such as
 * electronegativity, and a reader, sees each setting where the window is
 * made): sandboxed, context-isolated, no Node, no webview, no middle-click
 * auxclick navigation.
 */
function hardenedWindow(options: Omit<BrowserWindowConstructorOptions, 'webPreferences'>): BrowserWindow {
  return new BrowserWindow({
    ...options,
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
      disableBlinkFeatures: 'Auxclick',
    },
  });
}

async function start(): Promise<void> {
  denyAllPermissions(session.defaultSession);
  enforceCsp(session.defaultSession);

  // The device router follows PulseAudio (hot-plug, default changes) without touching a live call.
  const router = new AudioRouter();
  await router.start();
  logDeviceEvents(router, (line) => console.log(line));
  const audio = new LocalAudio(router);
  const phone = new Softphone({
    dataDir: app.getPath('userData'),
    secrets: keychainStore(),
    audio,
    sounds: { ringtone: resourcePath('sounds', 'ringtone.wav'), ringback: resourcePath('sounds', 'ringback.wav') },
    deviceName: `Parley desktop (${process.platform})`,
  });

  let quitting = false;
  let mainWindow: BrowserWindow | undefined;
  let callWindow: BrowserWindow | undefined;

  const load = (win: BrowserWindow, hash = '') => {
    if (devServerUrl) void win.loadURL(devServerUrl + hash);
    else void win.loadFile(rendererIndex, hash ? { hash: hash.slice(1) } : {});
  };

  const showMain = () => {
    if (!mainWindow || mainWindow.isDestroyed()) {
      mainWindow = hardenedWindow({
        width: 420,
        height: 720,
        minWidth: 360,
        minHeight: 480,
        title: 'Parley',
        show: false,
      });
      mainWindow.once('ready-to-show', () => mainWindow?.show());
      // Closing the window keeps Parley running in the tray (calls keep ringing).
      mainWindow.on('close', (e) => {
        if (!quitting) {
          e.preventDefault();
          mainWindow?.hide();
        }
      });
      load(mainWindow);
    } else {
      if (mainWindow.isMinimized()) mainWindow.restore();
      mainWindow.show();
      mainWindow.focus();
    }
  };

  // The incoming call window: small, always on top, with Accept and Decline.
  const showCallWindow = () => {
    if (callWindow && !callWindow.isDestroyed()) return;
    callWindow = hardenedWindow({
      width: 340,
      height: 380,
      resizable: false,
      minimizable: false,
      maximizable: false,
      alwaysOnTop: true,
      skipTaskbar: false,
      title: 'Incoming call — Parley',
      show: false,
    });
    callWindow.setAlwaysOnTop(true, 'screen-saver');
    callWindow.once('ready-to-show', () => callWindow?.show());
    load(callWindow, '#call-window');
  };
  const closeCallWindow = () => {
    if (callWindow && !callWindow.isDestroyed()) callWindow.destroy();
    callWindow = undefined;
  };

  registerIpc(
    phone,
    (event) => isTrustedSender(event.senderFrame),
    () => [mainWindow, callWindow].filter((w): w is BrowserWindow => !!w && !w.isDestroyed()),
  );

  // ---- tray ----
  const tray = new Tray(nativeImage.createFromPath(trayImagePath('offline')));
  const calls = new Map<string, UiCall>();
  const renderTray = () => {
    const rooms = phone.roomInfo();
    const s = trayState({
      session: phone.sessionInfo(),
      calls: [...calls.values()],
      mic: phone.micState(),
      doNotDisturb: phone.settings().doNotDisturb,
      room: rooms.room ?? undefined,
      invites: rooms.invites,
    });
    lastTray = s;
    tray.setImage(nativeImage.createFromPath(trayImagePath(s.image)));
    tray.setToolTip(s.tooltip);
    tray.setContextMenu(
      Menu.buildFromTemplate([
        { label: 'Open Parley', click: showMain },
        {
          label: 'Do not disturb',
          type: 'checkbox',
          checked: phone.settings().doNotDisturb,
          click: (item) => void phone.updateSettings({ doNotDisturb: item.checked }),
        },
        { type: 'separator' },
        { label: 'Quit Parley', click: () => app.quit() },
      ]),
    );
  };
  tray.on('click', showMain);
  let lastTray = trayState({ session: phone.sessionInfo(), calls: [], mic: phone.micState(), doNotDisturb: false });
  const notificationsShown: string[] = [];
  // The Electron end-to-end tests (test/e2e/electron.test.ts) read what the tray and notifications showed.
  if (process.env['PARLEY_E2E'] === '1') {
    (globalThis as { parleyE2E?: unknown }).parleyE2E = { tray: () => lastTray, notifications: () => notificationsShown.slice() };
  }

  // ---- ringing: call window + notification ----
  // On Linux, Electron's notifications have no buttons (electron#24333): the desktop's notification
  // server over D-Bus shows Accept / Decline where it can (linux/call-notifier.ts), and Parley's own
  // call window stays the way to answer where it cannot. The same module follows the desktop's
  // do-not-disturb and pauses media players during calls.
  let linuxDesktop: LinuxDesktop | undefined;
  if (process.platform === 'linux') {
    linuxDesktop = await startLinuxDesktop(phone, {
      showCallWindow,
      showMain,
      answered: showMain,
      failed: (message) => phone.emit('notice', { level: 'warning', message }),
      warn: (message) => console.warn(`[desktop] ${message}`),
    });
  }
  const linuxButtons = linuxDesktop?.notifications?.supportsActions === true;
  let notification: Notification | undefined;
  phone.on('call', (c) => {
    calls.set(c.callId, c);
    if (c.state === 'ended') setTimeout(() => calls.delete(c.callId), 1000);
    if (c.state === 'incoming' && !c.silenced && linuxButtons) {
      notificationsShown.push(`${c.peer} is calling`);
    } else if (c.state === 'incoming' && !c.silenced) {
      showCallWindow();
      if (Notification.isSupported()) {
        notification = new Notification({
          title: `${c.peer} is calling`,
          body: 'Parley — incoming call',
          urgency: 'critical',
          timeoutType: 'never',
          actions: [
            { type: 'button', text: 'Accept' },
            { type: 'button', text: 'Decline' },
          ],
        });
        notification.on('action', (_e, index) => {
          if (index === 0) void phone.answer(c.callId).then(showMain, () => {});
          else void phone.decline(c.callId).catch(() => {});
        });
        notification.on('click', showCallWindow);
        notification.show();
        notificationsShown.push(`${c.peer} is calling`);
      }
    } else if (c.state !== 'incoming') {
      closeCallWindow();
      notification?.close();
      notification = undefined;
      if (c.state === 'connecting' && c.direction === 'incoming') showMain();
    }
    renderTray();
  });
  // A group call ringing here: the main window shows its ringing screen (Join / Decline), and a notification says who.
  const groupNotes = new Map<string, Notification>();
  phone.on('roomInvites', ({ invites }) => {
    for (const [roomId, n] of groupNotes) {
      if (!invites.some((i) => i.roomId === roomId)) {
        n.close();
        groupNotes.delete(roomId);
      }
    }
    for (const i of invites) {
      if (i.silenced || groupNotes.has(i.roomId)) continue;
      showMain();
      // On Linux the desktop's notification server shows Join / Decline (linux/group-ring-notifier.ts).
      if (linuxButtons || !Notification.isSupported()) continue;
      const n = new Notification({
        title: `${i.inviter} invites you to a group call`,
        body: i.participants.length ? `Parley — already in: ${i.participants.join(', ')}` : 'Parley — group call',
        urgency: 'critical',
        timeoutType: 'never',
        actions: [
          { type: 'button', text: 'Join' },
          { type: 'button', text: 'Decline' },
        ],
      });
      n.on('action', (_e, index) => {
        if (index === 0) void phone.joinRoom(i.roomId).then(showMain, () => {});
        else void phone.declineRoom(i.roomId).catch(() => {});
      });
      n.on('click', showMain);
      n.show();
      groupNotes.set(i.roomId, n);
      notificationsShown.push(`${i.inviter} invites you to a group call`);
    }
    renderTray();
  });
  for (const ev of ['mic', 'session', 'settings'] as const) phone.on(ev, renderTray);
  // The group call's status comes every second (quality): the tray changes only when what it shows does.
  phone.on('room', () => {
    const rooms = phone.roomInfo();
    const next = trayState({ session: phone.sessionInfo(), calls: [...calls.values()], mic: phone.micState(), doNotDisturb: phone.settings().doNotDisturb, room: rooms.room ?? undefined, invites: rooms.invites });
    if (next.image !== lastTray.image || next.tooltip !== lastTray.tooltip) renderTray();
  });

  // ---- push-to-talk ----
  let hook: KeyHook | undefined;
  const ptt = new PttKey({ keycodeOf: (code) => keycodeOf(code), onChange: (pressed) => phone.pushToTalk(pressed) });
  const pttTimer = setInterval(() => ptt.tick(), 250);
  let portalPtt: PortalPushToTalk | undefined;
  const applyPtt = () => {
    const { enabled, key } = phone.settings().pushToTalk;
    hook?.stop();
    hook = undefined;
    void portalPtt?.close();
    portalPtt = undefined;
    if (!enabled) return;
    // Under Wayland no X11 hook sees other apps' keys: the desktop portal's GlobalShortcuts does,
    // with key down (Activated) and up (Deactivated). Until it answers, and whenever it is lost,
    // the key counts as released (the microphone closed).
    if (process.platform === 'linux' && (process.env['XDG_SESSION_TYPE'] === 'wayland' || process.env['WAYLAND_DISPLAY'])) {
      phone.setPushToTalkMechanism('window');
      void PortalPushToTalk.start(key)
        .then(({ client }) => {
          if (!phone.settings().pushToTalk.enabled) return client.close();
          portalPtt = client;
          client.on('key', (pressed) => phone.pushToTalk(pressed));
          client.on('lost', (reason) => {
            phone.pushToTalkUncertain();
            phone.setPushToTalkMechanism('window');
            phone.emit('notice', { level: 'warning', message: `Push to talk works only while Parley has focus: ${reason}` });
          });
          phone.setPushToTalkMechanism('portal');
          return undefined;
        })
        .catch((e: unknown) => {
          phone.emit('notice', { level: 'warning', message: `Push to talk works only while Parley has focus: ${(e as Error).message}` });
        });
      return;
    }
    const support = hookSupport();
    if (!support.ok) {
      phone.setPushToTalkMechanism('window');
      return;
    }
    try {
      ptt.setKey(key);
      hook = startKeyHook();
      hook.on('keydown', (k) => ptt.keydown(k));
      hook.on('keyup', (k) => ptt.keyup(k));
      hook.on('stopped', () => {
        ptt.hookLost();
        phone.pushToTalkUncertain();
      });
      phone.setPushToTalkMechanism('global-hook');
    } catch (e) {
      phone.setPushToTalkMechanism('window');
      phone.emit('notice', { level: 'warning', message: `Push to talk works only while Parley has focus: ${(e as Error).message}` });
    }
  };
  let lastPtt = '';
  phone.on('settings', (s) => {
    const key = JSON.stringify(s.pushToTalk);
    if (key !== lastPtt) {
      lastPtt = key;
      applyPtt();
    }
    app.setLoginItemSettings({ openAtLogin: s.startAtLogin });
  });

  // ---- deep links: asked first, Cancel by default, one question at a time ----
  const linkGate = new DeepLinkGate();
  const follow = (link: DeepLink | undefined) => {
    if (!linkGate.offer(link)) return;
    showMain();
    const ask = callConfirmation(link);
    const answer = mainWindow ? dialog.showMessageBox(mainWindow, ask) : dialog.showMessageBox(ask);
    void answer
      .then(({ response }) => {
        const callee = confirmedCallee(link, response);
        if (callee) return phone.startCall(callee);
        return undefined;
      })
      .catch((e: unknown) => {
        phone.emit('notice', { level: 'error', message: `Cannot call ${link.username}: ${(e as Error).message}` });
      })
      .finally(() => linkGate.settle());
  };
  app.on('second-instance', (_e, argv) => {
    showMain();
    follow(deepLinkFromArgv(argv));
  });
  app.on('open-url', (e, url) => {
    e.preventDefault();
    follow(parseDeepLink(url));
  });

  // ---- lifecycle ----
  app.on('activate', showMain);
  app.on('window-all-closed', () => {
    // Stay in the tray.
  });
  app.on('before-quit', (e) => {
    if (quitting) return;
    quitting = true;
    e.preventDefault();
    clearInterval(pttTimer);
    hook?.stop();
    void portalPtt?.close();
    void Promise.allSettled([linuxDesktop?.stop()]).then(() => phone.shutdown()).finally(() => {
      router.close();
      tray.destroy();
      app.exit(0);
    });
  });

  showMain();
  await phone.start().catch((e: unknown) => {
    phone.emit('notice', { level: 'error', message: (e as Error).message });
  });
  lastPtt = JSON.stringify(phone.settings().pushToTalk);
  applyPtt();
  renderTray();
  follow(deepLinkFromArgv(process.argv));
}
