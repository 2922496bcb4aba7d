/**
 * The push-to-talk key as a global hook reports it (uiohook-napi on X11,
 * Windows and macOS), turned into pressed / released for the Softphone —
 * failing safe: whenever the key state becomes uncertain the microphone closes.
 *
 * - Auto-repeat keydowns while held are ignored (one press).
 * - If the OS auto-repeats this key and the repeats stop for longer than
 *   `missedReleaseMs` without a keyup, the release was missed (the hook lost
 *   an event, the session was locked, another grab took the key): released.
 * - When the hook stops or fails: released.
 *
 * Key names are `KeyboardEvent.code` values ("F8", "Space", "ControlRight"…);
 * the hook's `keycodeOf` (native/hotkeys) maps them to its key codes.
 */

export interface PttKeyOptions {
  /** The hook's key code for a KeyboardEvent.code (native/hotkeys `keycodeOf`). */
  keycodeOf: (code: string) => number | undefined;
  /** Called with true on press and false on release (including fail-safe releases). */
  onChange: (pressed: boolean) => void;
  /** Without repeats for this long after repeats were seen, a held key is assumed released, ms (default 1000). */
  missedReleaseMs?: number;
  /** Clock, ms (tests). */
  now?: () => number;
}

/** The state machine of one push-to-talk key. Feed it hook events; call `tick()` periodically (e.g. every 250 ms). */
export class PttKey {
  private keycode: number | undefined;
  private pressed = false;
  private repeats = 0;
  private lastEventAt = 0;
  private readonly now: () => number;
  private readonly missedReleaseMs: number;

  constructor(private readonly options: PttKeyOptions) {
    this.now = options.now ?? Date.now;
    this.missedReleaseMs = options.missedReleaseMs ?? 1000;
  }

  /** Chooses the key (KeyboardEvent.code). @throws Error naming the key when the hook cannot see it. */
  setKey(code: string): void {
    const keycode = this.options.keycodeOf(code);
    if (keycode === undefined) throw new Error(`push to talk cannot use the key "${code}"; choose a letter, digit, F-key or modifier`);
    this.release();
    this.keycode = keycode;
  }

  keydown(keycode: number): void {
    if (keycode !== this.keycode) return;
    this.lastEventAt = this.now();
    if (this.pressed) {
      this.repeats++;
      return;
    }
    this.pressed = true;
    this.repeats = 0;
    this.options.onChange(true);
  }

  keyup(keycode: number): void {
    if (keycode !== this.keycode) return;
    this.release();
  }

  /** Fail-safe checks: a held key whose auto-repeat stopped without a keyup is released. */
  tick(): void {
    if (this.pressed && this.repeats > 0 && this.now() - this.lastEventAt > this.missedReleaseMs) this.release();
  }

  /** The hook stopped or failed: the key state is unknown, so the key is released. */
  hookLost(): void {
    this.release();
  }

  isPressed(): boolean {
    return this.pressed;
  }

  private release(): void {
    if (!this.pressed) return;
    this.pressed = false;
    this.repeats = 0;
    this.options.onChange(false);
  }
}
