/**
 * Sender-side adaptation of the Opus encoder to the network, from the RTCP
 * receiver reports of the far end (RFC 3550 §6.4.2): the loss it sees steers
 * the encoder's expected-loss hint (which sets how much in-band FEC libopus
 * spends, RFC 6716 §2.1.7) and the bitrate. The policy follows the shape of
 * WebRTC's audio network adaptor (`modules/audio_coding/audio_network_adaptor`:
 * FEC and bitrate controllers with thresholds and hysteresis), simplified:
 *
 * - loss is smoothed per report: `L ← 0.7·L + 0.3·fractionLost`;
 * - expected-loss hint = ceil(1.5 × L%), clamped to [`minLossHint`, 30] %;
 * - bitrate steps down from `baseBitrate` to 24 kb/s when L > 10 % and to
 *   16 kb/s when L > 20 % (fewer bits for the primary stream leaves room for
 *   FEC and eases congestion), and steps back up one level after 10 s with
 *   L < 5 %.
 *
 * The round-trip time is given by the caller: RFC 3550 §6.4.1 derives it from
 * the report's LSR/DLSR and the send time of our SR; werift keeps that send
 * time (its SR timestamps' fraction field is not a standard 2⁻³² fraction, so
 * the standard formula cannot be applied from outside) and smooths the result.
 */
export interface EncoderControl {
  setBitrate?(bitsPerSecond: number): void;
  setExpectedLossPercent?(percent: number): void;
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

  constructor(
    private readonly encoder: EncoderControl,
    private readonly options: { baseBitrate: number; minLossHint: number; now?: () => number },
  ) {
    this.hint = options.minLossHint;
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
    };
  }

  private bitrate(): number {
    return this.level === 0 ? this.options.baseBitrate : Math.min(this.options.baseBitrate, LEVELS[this.level - 1]!);
  }

  private apply(): void {
    const now = (this.options.now ?? Date.now)();
    const lossPct = this.loss * 100;
    const hint = Math.min(30, Math.max(this.options.minLossHint, Math.ceil(1.5 * lossPct)));
    if (hint !== this.hint) {
      this.hint = hint;
      this.encoder.setExpectedLossPercent?.(hint);
    }
    const before = this.level;
    const wanted = lossPct > 20 ? 2 : lossPct > 10 ? 1 : 0;
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
  }
}
