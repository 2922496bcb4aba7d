import { z } from 'zod';

/** Largest envelope body in characters (an SDP offer is ~1–3 KiB; room for sealing overhead). */
export const MAX_ENVELOPE_BYTES = 32 * 1024;

/**
 * An opaque payload routed between devices: SDP offers/answers and ICE
 * candidates travel only inside one. The server never parses `body`; today it
 * is `plain` (JSON text), and the end-to-end security issue adds `sealed`
 * without changing any routing code.
 */
export const Envelope = z.object({
  kind: z.enum(['plain', 'sealed']),
  body: z.string().max(MAX_ENVELOPE_BYTES, `an envelope body is at most ${MAX_ENVELOPE_BYTES} characters`),
});
export type Envelope = z.infer<typeof Envelope>;

/** What a `plain` envelope carries. */
export const EnvelopeContent = z.discriminatedUnion('type', [
  z.object({ type: z.literal('offer'), sdp: z.string() }),
  z.object({ type: z.literal('answer'), sdp: z.string() }),
  z.object({
    type: z.literal('candidate'),
    candidate: z.string(),
    sdpMid: z.string().nullable().optional(),
    sdpMLineIndex: z.number().int().nullable().optional(),
  }),
  z.object({ type: z.literal('end-of-candidates') }),
]);
export type EnvelopeContent = z.infer<typeof EnvelopeContent>;

/** Wraps content in a plain envelope. */
export function plainEnvelope(content: EnvelopeContent): Envelope {
  return { kind: 'plain', body: JSON.stringify(content) };
}

/**
 * Opens a plain envelope.
 * @throws Error when the envelope is sealed (not supported yet) or its body is not valid content.
 */
export function openPlainEnvelope(envelope: Envelope): EnvelopeContent {
  if (envelope.kind !== 'plain') throw new Error('sealed envelopes are not supported by this client');
  return EnvelopeContent.parse(JSON.parse(envelope.body));
}
