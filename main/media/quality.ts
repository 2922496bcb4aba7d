/**
 * A listening-quality estimate from network figures: the ITU-T G.107 E-model,
 * simplified as in Cole & Rosenbluth, "Voice over IP performance monitoring"
 * (ACM CCR 31(2), 2001):
 *
 *   R   = 93.2 − Id − Ie,eff
 *   Id  = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3)        (d: one-way mouth-to-ear delay, ms)
 *   Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl + Bpl)          (G.107 §7.4, random loss Ppl in %)
 *   MOS = 1 + 0.035·R + 7·10⁻⁶·R·(R − 60)·(100 − R)      (G.107 Annex B), R clamped to [0, 100]
 *
 * G.113 gives no Ie/Bpl for Opus; we take Ie = 0 and Bpl = 20 (a codec with
 * good concealment: G.113 lists Bpl 10–34 for codecs with PLC). The scale is
 * narrowband's (max ≈ 4.4): a relative indicator, not a wideband MOS.
 */
export function estimateMos(oneWayDelayMs: number, lossPercent: number): number {
  const d = Math.max(0, oneWayDelayMs);
  const id = 0.024 * d + (d > 177.3 ? 0.11 * (d - 177.3) : 0);
  const ppl = Math.max(0, Math.min(100, lossPercent));
  const ie = 0;
  const bpl = 20;
  const ieEff = ie + ((95 - ie) * ppl) / (ppl + bpl);
  const r = Math.max(0, Math.min(100, 93.2 - id - ieEff));
  return 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r);
}
