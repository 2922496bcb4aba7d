/**
 * One input of the mixer (a PlayoutChain, a tone): gives some audio per pull,
 * 48 kHz mono s16, usually one frame of the mixer's size. A PlayoutChain that
 * aligns its phase gives shorter or longer frames in pauses (multiples of
 * 5 ms): the mixer takes them as they come.
 */
export interface MixerInput {
  pull(): Int16Array;
}

/** One input and what is left of the last audio it gave. */
interface Slot {
  input: MixerInput;
  frame: Int16Array;
  offset: number;
}

const NOTHING = new Int16Array(0);

/**
 * Sums the far ends (one {@link PlayoutChain} per remote participant) and
 * local sounds (tones) into what the speaker pulls, 48 kHz mono s16.
 * Samples are summed in 32 bits and saturated to the int16 range (no wrap:
 * two loud talkers clip, they do not crackle).
 *
 * Inputs may give frames of any length, and independently of each other:
 * each input keeps what it gave until it is played, and a pull returns the
 * audio up to the end of the first input's frame to run out. So each input is
 * pulled again exactly when the speaker needs its next audio — the moment a
 * phase-aligning PlayoutChain steers to come just after its packets arrive
 * (adaptive-jitter-buffer.ts, "Phase alignment") — for every stream of a
 * group call at once, not only for a 1:1 call's one stream. A pull then
 * returns between 5 ms and a frame of audio; a lone input with nothing left
 * over is passed through untouched.
 */
export class Mixer {
  private readonly slots: Slot[] = [];

  /** @param frameSamples samples of silence pulled with no inputs (480 or 960: one frame). */
  constructor(private readonly frameSamples: number) {}

  /** Adds an input; returns the function that removes it (and drops what it had left unplayed, at most a frame). */
  add(input: MixerInput): () => void {
    const slot: Slot = { input, frame: NOTHING, offset: 0 };
    this.slots.push(slot);
    return () => {
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots.splice(i, 1);
    };
  }

  get size(): number {
    return this.slots.length;
  }

  /**
   * The next stretch of the mix (a new array, the caller's to change): one
   * frame of silence with no inputs; else as long as the shortest audio any
   * input has left (pulling an input whose audio ran out first).
   * @throws RangeError when an input gives an empty frame.
   */
  pull(): Int16Array {
    const slots = this.slots;
    if (slots.length === 0) return new Int16Array(this.frameSamples);
    let n = Infinity;
    for (const s of slots) {
      if (s.offset >= s.frame.length) {
        // One input with nothing left over passes through as it is.
        if (slots.length === 1) return this.checked(s.input.pull());
        s.frame = this.checked(s.input.pull());
        s.offset = 0;
      }
      n = Math.min(n, s.frame.length - s.offset);
    }
    if (slots.length === 1) {
      const s = slots[0]!;
      const out = s.frame.slice(s.offset, s.offset + n);
      s.offset += n;
      return out;
    }
    const acc = new Int32Array(n);
    for (const s of slots) {
      const f = s.frame;
      for (let i = 0, j = s.offset; i < n; i++, j++) acc[i]! += f[j]!;
      s.offset += n;
    }
    const out = new Int16Array(n);
    for (let i = 0; i < n; i++) {
      const v = acc[i]!;
      out[i] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
    }
    return out;
  }

  private checked(frame: Int16Array): Int16Array {
    if (frame.length === 0) throw new RangeError('a mixer input gave an empty frame');
    return frame;
  }
}
