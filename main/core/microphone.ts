import type { MicState } from '../../common/ipc/contract';

/**
 * Whether the microphone reaches the peer: the mute button and push-to-talk
 * combined. With push-to-talk on, the microphone is open only while the key is
 * held, and anything uncertain — the key hook died, the window lost focus while
 * the key was down, a release may have been missed — closes it: the fallback
 * is always muted, never open.
 */
export class MicControl {
  private muted = false;
  private ptt = false;
  private pressed = false;
  private mechanism: MicState['pttMechanism'] = 'window';

  constructor(private readonly onChange: (s: MicState) => void) {}

  state(): MicState {
    return {
      muted: this.muted,
      pushToTalk: this.ptt,
      talking: this.ptt && this.pressed,
      open: !this.muted && (!this.ptt || this.pressed),
      pttMechanism: this.mechanism,
    };
  }

  setMuted(muted: boolean): MicState {
    return this.apply(() => (this.muted = muted));
  }

  setPushToTalk(enabled: boolean): MicState {
    return this.apply(() => {
      this.ptt = enabled;
      this.pressed = false;
    });
  }

  /** The push-to-talk key went down (true) or up (false). Ignored while push-to-talk is off. */
  setPressed(pressed: boolean): MicState {
    return this.apply(() => {
      if (this.ptt) this.pressed = pressed;
    });
  }

  /** The key source can no longer vouch for the key state (hook died, focus lost): treat the key as released. */
  releaseUncertain(): MicState {
    return this.setPressed(false);
  }

  setMechanism(m: MicState['pttMechanism']): MicState {
    return this.apply(() => (this.mechanism = m));
  }

  private apply(change: () => void): MicState {
    const before = JSON.stringify(this.state());
    change();
    const after = this.state();
    if (JSON.stringify(after) !== before) this.onChange(after);
    return after;
  }
}
