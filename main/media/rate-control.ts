/**
 * Sender-side adaptation of the Opus encoder to the network, from the RTCP
 * receiver reports of the far end (RFC 3550 §6.4.2): the loss it sees steers
 * the encoder's expected-loss hint (which sets how much in-band FEC libopus
 * spends, RFC 6716 §2.1.7) and the bitrate. The policy follows the shape of
 * WebRTC's audio network adaptor (`modules/audio_coding/audio_network_adaptor`:
 * FEC and bitrate controllers with thresholds and hysteresis), simplified:
 *
 * - loss is smoothed per report: `L ← 0.7·L + 0.3·fractionLost`;
 * - without redundancy (the peer did not negotiate `red`): expected-loss hint
 *   = ceil(1.5 × L%), clamped to [`minLossHint`, 30] %, and the bitrate steps
 *   down from `baseBitrate` to 24 kb/s when L > 10 % and to 16 kb/s when
 *   L > 20 % (fewer bits for the primary stream leaves room for FEC and eases
 *   congestion), back up one level after 10 s with L < 5 %;
 * - with redundancy: hint = min(5, ceil(L%)) (no floor) and only the 24 kb/s
 *   step, at L > 20 %. The in-band FEC that a high hint buys costs the
 *   primary stream its quality (libopus moves bits to the LBRR frame and
 *   narrows SILK's coding) while RFC 2198 already rebuilds the lost frames
 *   exactly. bench/jitter-sim.ts (9 seeds; two impaired legs): `clean` 0.976
 *   with the old 10 % floor → 0.989 without it (Chromium, whose hint follows
 *   the measured loss, scores 0.989 there in bench:quality); `mobile` mean
 *   0.811 → 0.816 and `bad` 0.836 → 0.909 against the no-redundancy ladder
 *   (hint 30 %, 16 kb/s);
 * - RFC 2198 redundancy (when the peer negotiated `red`): each packet repeats
 *   the previous frame from the start (an insurance until reports arrive),
 *   the previous two as soon as L > 3 %, one as soon as L > 0.5 %; it steps
 *   down only after 10 s of lower loss (none when L < 0.5 %). Opus in-band FEC rebuilds only the single
 *   frame before a packet, and at a reduced quality; redundancy rebuilds a
 *   burst of up to two lost packets exactly. Measured with bench/jitter-sim.ts
 *   (9 seeds, two impaired legs): mean similarity under `mobile` (5 % loss in
 *   bursts of 3 per leg) 0.785 → 0.816 with two frames of redundancy, under
 *   `bad` (15 % per leg) 0.805 → 0.847; the price is up to 3× the audio
 *   bitrate while the path loses packets.
 *
 * The round-trip time is given by the caller: RFC 3550 §6.4.1 derives it from
 * the report's LSR/DLSR and the send time of our SR, which werift keeps (a
 * private field; main/media/peer.ts reads it) and smooths. Its SR timestamps
 * are standard NTP since patches/werift+0.25.2.patch (test/unit/werift-ntp.test.ts).
 */
export interface EncoderControl {
  setBitrate?(bitsPerSecond: number): void;
  setExpectedLossPercent?(percent: number): void;
  /** Earlier frames repeated in each packet, 0–2 (RFC 2198). */
  setRedundancy?(frames: number): void;
}

/** One RTCP report block about our stream (RFC 3550 §6.4.1). */
export interface ReportBlock {
  /** Fraction of our packets lost since the last report, 0–255 (/256). */
  fractionLost: number;
  /** Interarrival jitter in RTP timestamp units (48 kHz). */
  jitter: number;
}

export interface NetworkView {
  /** Smoothed loss of our outgoing packets, 0–1. */
  lossFraction: number;
  /** Round-trip time, ms (undefined until an SR was answered). */
  rttMs: number | undefined;
  /** Far end's jitter estimate of our stream, ms. */
  remoteJitterMs: number;
  bitrate: number;
  lossHintPercent: number;
  /** Earlier frames repeated in each packet (RFC 2198), 0–2. */
  redundancy: number;
}

const LEVELS = [24_000, 16_000];
const UP_AFTER_MS = 10_000;

export class SendRateController {
  private loss = 0;
  private rtt: number | undefined;
  private remoteJitterMs = 0;
  private level = 0; // 0 = base bitrate, 1 = 24k, 2 = 16k
  private calmSince: number | undefined;
  private hint: number;
  private redundancy = 1;
  private redCalmSince: number | undefined;

  /** Whether the peer negotiated RFC 2198 redundancy (known once the answer is applied). */
  private redundancyNegotiated = false;

  constructor(
    private readonly encoder: EncoderControl,
    private readonly options: { baseBitrate: number; minLossHint: number; now?: () => number },
  ) {
    this.hint = options.minLossHint;
    encoder.setRedundancy?.(this.redundancy);
  }

  /**
   * Tells the controller whether packets carry RFC 2198 redundancy (the
   * negotiated send codec is `red`); applies the matching policy at once.
   */
  setRedundancyNegotiated(negotiated: boolean): void {
    if (negotiated === this.redundancyNegotiated) return;
    this.redundancyNegotiated = negotiated;
    this.apply();
  }

  /**
   * Takes one report block about our stream.
   * @param rttMs the round-trip time measured with it, ms, when known.
   */
  onReport(block: ReportBlock, rttMs?: number): void {
    this.loss = 0.7 * this.loss + 0.3 * (block.fractionLost / 256);
    this.remoteJitterMs = block.jitter / 48;
    if (rttMs !== undefined && rttMs >= 0 && rttMs < 10_000) this.rtt = rttMs;
    this.apply();
  }

  view(): NetworkView {
    return {
      lossFraction: this.loss,
      rttMs: this.rtt,
      remoteJitterMs: this.remoteJitterMs,
      bitrate: this.bitrate(),
      lossHintPercent: this.hint,
      redundancy: this.redundancy,
    };
  }

  private bitrate(): number {
    return this.level === 0 ? this.options.baseBitrate : Math.min(this.options.baseBitrate, LEVELS[this.level - 1]!);
  }

  private apply(): void {
    const now = (this.options.now ?? Date.now)();
    const lossPct = this.loss * 100;
    const hint = this.redundancyNegotiated
      ? Math.min(5, Math.ceil(lossPct))
      : Math.min(30, Math.max(this.options.minLossHint, Math.ceil(1.5 * lossPct)));
    if (hint !== this.hint) {
      this.hint = hint;
      this.encoder.setExpectedLossPercent?.(hint);
    }
    const before = this.level;
    const wanted = this.redundancyNegotiated ? (lossPct > 20 ? 1 : 0) : lossPct > 20 ? 2 : lossPct > 10 ? 1 : 0;
    if (wanted > this.level) {
      this.level = wanted;
      this.calmSince = undefined;
    } else if (lossPct < 5 && this.level > 0) {
      this.calmSince ??= now;
      if (now - this.calmSince >= UP_AFTER_MS) {
        this.level--;
        this.calmSince = now;
      }
    } else {
      this.calmSince = undefined;
    }
    if (this.level !== before) this.encoder.setBitrate?.(this.bitrate());

    const red = lossPct > 3 ? 2 : lossPct > 0.5 ? 1 : 0;
    let nextRed = this.redundancy;
    if (red > this.redundancy) {
      nextRed = red;
      this.redCalmSince = undefined;
    } else if (red < this.redundancy) {
      this.redCalmSince ??= now;
      if (now - this.redCalmSince >= UP_AFTER_MS) {
        nextRed = red;
        this.redCalmSince = undefined;
      }
    } else {
      this.redCalmSince = undefined;
    }
    if (nextRed !== this.redundancy) {
      this.redundancy = nextRed;
      this.encoder.setRedundancy?.(nextRed);
    }
  }
}
