/**
 * One input of the mixer: gives one frame of the mixer's size per pull (e.g.
 * a PlayoutChain, a tone). A lone input may give another length (a
 * PlayoutChain aligning its phase): it is passed through.
 */
export interface MixerInput {
  pull(): Int16Array;
}

/**
 * Sums the far ends (one {@link PlayoutChain} per remote participant) and
 * local sounds (tones) into the one frame the speaker pulls, 48 kHz mono s16.
 * Samples are summed in 32 bits and saturated to the int16 range (no wrap:
 * two loud talkers clip, they do not crackle). With one input the frame is
 * passed through untouched.
 */
export class Mixer {
  private readonly inputs: MixerInput[] = [];

  /** @param frameSamples samples per pulled frame (480 or 960). */
  constructor(private readonly frameSamples: number) {}

  /** Adds an input; returns the function that removes it. */
  add(input: MixerInput): () => void {
    this.inputs.push(input);
    return () => {
      const i = this.inputs.indexOf(input);
      if (i >= 0) this.inputs.splice(i, 1);
    };
  }

  get size(): number {
    return this.inputs.length;
  }

  /**
   * One mixed frame (a new array): silence with no inputs.
   * @throws RangeError when an input gives a frame of another size.
   */
  pull(): Int16Array {
    if (this.inputs.length === 0) return new Int16Array(this.frameSamples);
    // One input passes through as it is: it may be a PlayoutChain whose frames are aligned (shortened or lengthened).
    if (this.inputs.length === 1) return this.inputs[0]!.pull();
    const acc = new Int32Array(this.frameSamples);
    for (const input of this.inputs) {
      const f = this.checked(input.pull());
      for (let i = 0; i < acc.length; i++) acc[i]! += f[i]!;
    }
    const out = new Int16Array(this.frameSamples);
    for (let i = 0; i < out.length; i++) {
      const v = acc[i]!;
      out[i] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
    }
    return out;
  }

  private checked(frame: Int16Array): Int16Array {
    if (frame.length !== this.frameSamples) {
      throw new RangeError(`mixer input gave ${frame.length} samples, the mixer's frame is ${this.frameSamples}`);
    }
    return frame;
  }
}
