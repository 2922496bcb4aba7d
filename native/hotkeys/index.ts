/**
 * A global keyboard hook (uiohook-napi over libuiohook): key down / key up for
 * every key, even while another application has focus — push-to-talk needs
 * both edges, which Electron's globalShortcut does not give.
 *
 * Works on X11, Windows and macOS (which asks for the Accessibility
 * permission). Under Wayland, X11 hooks only see keys typed into X11 windows,
 * so `hookSupport()` reports it and the app falls back to the window's own
 * key events (see main/app).
 *
 * uiohook-napi is loaded on first use (on Linux it needs libx11-6, libxtst6, libxt6, libxrandr2).
 */
import { EventEmitter } from 'node:events';
import { loadNativeModule, type NativeModuleSpec } from '../load';

interface UiohookKeyboardEvent {
  keycode: number;
}
interface UiohookModule {
  UiohookKey: Record<string, number>;
  uIOhook: EventEmitter & { start(): void; stop(): void };
}

const UIOHOOK: NativeModuleSpec = {
  packageName: 'uiohook-napi',
  purpose: 'the global push-to-talk key',
  systemLibraries: {
    'libXtst.so.6': 'libxtst6',
    'libX11.so.6': 'libx11-6',
    'libXt.so.6': 'libxt6',
    'libXrandr.so.2': 'libxrandr2',
  },
};

let mod: UiohookModule | undefined;
function uiohook(): UiohookModule {
  mod ??= loadNativeModule<UiohookModule>(UIOHOOK);
  return mod;
}

/**
 * The uiohook name of a `KeyboardEvent.code` ("KeyA" → "A", "Digit1" → "1",
 * "ControlLeft" → "Ctrl", "ControlRight" → "CtrlRight", …). Pure.
 */
export function uiohookKeyName(code: string): string {
  const m = /^(Key|Digit)([A-Z0-9])$/.exec(code);
  if (m) return m[2]!;
  const renames: Record<string, string> = {
    ControlLeft: 'Ctrl',
    ControlRight: 'CtrlRight',
    AltLeft: 'Alt',
    ShiftLeft: 'Shift',
    MetaLeft: 'Meta',
  };
  return renames[code] ?? code;
}

/**
 * The hook's key code for a `KeyboardEvent.code`, or undefined when the hook cannot report that key.
 * @throws NativeModuleLoadError when uiohook-napi cannot load.
 */
export function keycodeOf(code: string): number | undefined {
  return uiohook().UiohookKey[uiohookKeyName(code)];
}

/** Where a global hook can see other applications' keys. */
export function hookSupport(env: NodeJS.ProcessEnv = process.env): { ok: boolean; why?: string } {
  if (process.platform !== 'linux') return { ok: true };
  if (env.XDG_SESSION_TYPE === 'wayland' || (env.WAYLAND_DISPLAY && !env.DISPLAY)) {
    return { ok: false, why: 'a Wayland session: X11 key hooks cannot see other apps’ keys' };
  }
  if (!env.DISPLAY) return { ok: false, why: 'no X display' };
  return { ok: true };
}

/** A running global hook. Emits `keydown` / `keyup` (key code) and `stopped` (why) when it fails. */
export interface KeyHook extends EventEmitter<{ keydown: [number]; keyup: [number]; stopped: [string] }> {
  stop(): void;
}

/**
 * Starts the global hook.
 * @throws NativeModuleLoadError when uiohook-napi cannot load; Error when the hook cannot start (no display…).
 */
export function startKeyHook(): KeyHook {
  const { uIOhook } = uiohook();
  const hook = new EventEmitter() as KeyHook;
  const down = (e: UiohookKeyboardEvent) => hook.emit('keydown', e.keycode);
  const up = (e: UiohookKeyboardEvent) => hook.emit('keyup', e.keycode);
  uIOhook.on('keydown', down);
  uIOhook.on('keyup', up);
  try {
    uIOhook.start();
  } catch (e) {
    uIOhook.off('keydown', down);
    uIOhook.off('keyup', up);
    throw new Error(`the global key hook cannot start: ${(e as Error).message}`, { cause: e });
  }
  let stopped = false;
  hook.stop = () => {
    if (stopped) return;
    stopped = true;
    uIOhook.off('keydown', down);
    uIOhook.off('keyup', up);
    try {
      uIOhook.stop();
    } catch {
      // already stopped
    }
    hook.emit('stopped', 'stopped');
  };
  return hook;
}
