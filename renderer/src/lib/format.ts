/** Formatting helpers for the screens (pure; unit-tested with the renderer's build). */

/** A message from the core ("the speaker … is gone") as a sentence for the screen: first letter capitalised. */
export function sentence(message: string): string {
  return message.charAt(0).toUpperCase() + message.slice(1);
}

/** Seconds as m:ss or h:mm:ss. */
export function clock(totalS: number): string {
  const s = Math.max(0, Math.floor(totalS));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** Words for why a call ended. */
export function endWords(reason: string | undefined, direction: 'outgoing' | 'incoming'): string {
  switch (reason) {
    case 'hangup':
      return 'Call ended';
    case 'declined':
      return direction === 'outgoing' ? 'Call declined' : 'You declined the call';
    case 'busy':
      return 'Busy — they are on another call';
    case 'no_answer':
      return 'No answer';
    case 'answered_elsewhere':
      return 'Answered on another device';
    case 'ttl_expired':
      return 'Call time limit reached';
    case 'budget_exceeded':
      return 'Call time budget used up';
    case 'policy':
      return 'Ended by the server’s call policy';
    case 'failed':
      return 'Call failed';
    default:
      return 'Call ended';
  }
}

/** Words for a call state. */
export function stateWords(state: string, direction: 'outgoing' | 'incoming'): string {
  switch (state) {
    case 'outgoing':
      return 'Calling…';
    case 'ringing':
      return 'Ringing…';
    case 'incoming':
      return 'Incoming call';
    case 'connecting':
      return 'Connecting…';
    case 'active':
      return 'In call';
    case 'held':
      return 'On hold';
    default:
      return direction === 'outgoing' ? 'Call' : 'Incoming call';
  }
}

/** Connection quality from live stats: RTT (ms), jitter (ms) and receive loss (%). */
export function quality(rttMs: number | undefined, jitterMs: number, lossPercent: number): { level: 0 | 1 | 2 | 3; words: string } {
  const rtt = rttMs ?? 0;
  if (lossPercent >= 10 || rtt >= 600 || jitterMs >= 80) return { level: 0, words: 'Poor connection' };
  if (lossPercent >= 4 || rtt >= 300 || jitterMs >= 40) return { level: 1, words: 'Fair connection' };
  if (lossPercent >= 1 || rtt >= 150 || jitterMs >= 20) return { level: 2, words: 'Good connection' };
  return { level: 3, words: 'Excellent connection' };
}

/** Two-letter initials for an avatar. */
export function initials(username: string): string {
  const parts = username.split(/[._-]+/).filter(Boolean);
  const text = parts.length > 1 ? parts[0]![0]! + parts[1]![0]! : username.slice(0, 2);
  return text.toUpperCase();
}

/** A date/time as "Today 14:05", "Yesterday 09:12" or "12 Mar 18:40". */
export function when(ms: number, now = Date.now()): string {
  const d = new Date(ms);
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const day = new Date(now);
  day.setHours(0, 0, 0, 0);
  if (ms >= day.getTime()) return `Today ${time}`;
  if (ms >= day.getTime() - 86_400_000) return `Yesterday ${time}`;
  return `${d.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${time}`;
}

/** What the in-call screen says about a call's link, from the facts the engine reports. */
export interface CallLinkStatus {
  /** The status line ("In call", "Reconnecting… 4 s", "No audio from bob for 2 s", "Connection interrupted", or how it ended). */
  words: string;
  /** No audio is coming from the peer now (the line shows in the warning colour, quality shows "No audio"). */
  interrupted: boolean;
  /** Further lines for the user: how long no audio came, where the signaling stands. */
  details: string[];
}

/** Whole seconds from `since` to `now` (Unix ms), never negative. */
function secondsSince(since: number | undefined, now: number): number {
  return since === undefined ? 0 : Math.max(0, Math.floor((now - since) / 1000));
}

/**
 * The in-call status in words (issue 18, "honest status"): never "In call"
 * while no audio has come from the peer for more than a second.
 * - media `reconnecting`: "Reconnecting… N s" (N since `mediaSince`), or
 *   "Connection interrupted" while our own signaling is offline (no new path
 *   can be agreed until it is back); a line says how long no audio came;
 * - media `connected` but the latest stats tick saw more than 1 s without
 *   audio (the engine flips to `reconnecting` within 0.1 s of that):
 *   "No audio from <peer> for N s";
 * - our signaling `offline`: the call goes on peer to peer while we reconnect
 *   to the server; the peer's (`peer_offline`): the server holds the call for
 *   them until `signalingUntil`.
 * @param silentMs the latest `stats` tick's `silentMs`, and `at`, when it came (Unix ms).
 * @param now Unix ms.
 */
export function callLinkStatus(
  call: {
    state: string;
    direction: 'outgoing' | 'incoming';
    peer: string;
    endReason?: string;
    media?: 'connected' | 'reconnecting';
    mediaSince?: number;
    lastAudioAt?: number;
    signaling?: 'online' | 'offline' | 'peer_offline';
    signalingSince?: number;
    signalingUntil?: number;
  },
  now: number,
  tick?: { silentMs?: number; at: number },
): CallLinkStatus {
  if (call.state === 'ended') return { words: endWords(call.endReason, call.direction), interrupted: false, details: [] };
  const details: string[] = [];
  let words = stateWords(call.state, call.direction);
  let interrupted = false;
  const talking = call.state === 'active' || call.state === 'held';
  if (talking && call.media === 'reconnecting') {
    interrupted = true;
    words = call.signaling === 'offline' ? 'Connection interrupted' : `Reconnecting… ${secondsSince(call.mediaSince, now)} s`;
    // The stall is reported 1 s after the last packet: without lastAudioAt, count from there.
    const silentS = call.lastAudioAt !== undefined ? secondsSince(call.lastAudioAt, now) : secondsSince(call.mediaSince, now) + 1;
    details.push(`No audio from ${call.peer} for ${silentS} s`);
  } else if (talking && tick?.silentMs !== undefined && tick.silentMs > 1000) {
    interrupted = true;
    words = `No audio from ${call.peer} for ${secondsSince(tick.at - tick.silentMs, now)} s`;
  }
  if (call.signaling === 'offline') {
    const offlineS = secondsSince(call.signalingSince, now);
    details.push(`Offline — the call goes on peer to peer; reconnecting to the server${offlineS > 0 ? ` (${offlineS} s)` : ''}`);
  } else if (call.signaling === 'peer_offline') {
    const left = call.signalingUntil !== undefined ? Math.max(0, Math.ceil((call.signalingUntil - now) / 1000)) : undefined;
    details.push(
      `${call.peer}’s device lost the server; the call goes on peer to peer` + (left !== undefined ? ` (the server waits ${left} s more for it)` : ''),
    );
  }
  return { words, interrupted, details };
}

/**
 * A group call participant's connection quality, from what this client
 * receives of it: the loss over the last second (%) and the jitter buffer's
 * delay (ms; it grows with the network's jitter). The same bands as
 * {@link quality}: loss 1 / 4 / 10 %; a buffer of 120 / 200 / 400 ms stands
 * for jitter of roughly 20 / 40 / 80 ms.
 */
export function memberQuality(m: {
  self: boolean;
  lossPercent?: number;
  audio?: { playing: boolean; jitterBufferMs: number };
}): { level: 0 | 1 | 2 | 3; words: string } | undefined {
  if (m.self) return undefined;
  if (!m.audio) return { level: 0, words: 'Connecting…' };
  if (!m.audio.playing) return { level: 0, words: 'No audio yet' };
  const loss = m.lossPercent ?? 0;
  const buffer = m.audio.jitterBufferMs;
  if (loss >= 10 || buffer >= 400) return { level: 0, words: 'Poor connection' };
  if (loss >= 4 || buffer >= 200) return { level: 1, words: 'Fair connection' };
  if (loss >= 1 || buffer >= 120) return { level: 2, words: 'Good connection' };
  return { level: 3, words: 'Excellent connection' };
}

/** Words for how a group call ended for us (RoomStatus `state` and `endReason`). */
export function roomEndWords(state: string, endReason: string | undefined): string {
  if (state === 'left') return 'You left the group call';
  switch (endReason) {
    case 'empty':
      return 'Everyone left: the group call ended';
    case 'ended_by_admin':
      return 'The server’s administrator ended the group call';
    case 'server_shutdown':
      return 'The server shut down: the group call ended';
    case 'sfu_failed':
      return 'The server’s media relay failed: the group call ended';
    case 'signaling_lost':
      return 'The connection to the server was lost: the group call ended';
    case 'ttl_expired':
      return 'Group call time limit reached';
    case 'budget_exceeded':
      return 'Call time budget used up';
    case 'node_lost':
      return 'The server carrying the group call stopped: the group call ended';
    case 'failed':
      return 'Could not join the group call';
    default:
      return 'The group call ended';
  }
}

/** A list of names for a sentence: "bob", "bob and carol", "bob, carol and dave", "bob, carol and 3 others". */
export function names(list: string[], max = 3): string {
  if (list.length === 0) return 'nobody';
  if (list.length === 1) return list[0]!;
  if (list.length > max) return `${list.slice(0, max - 1).join(', ')} and ${list.length - max + 1} others`;
  return `${list.slice(0, -1).join(', ')} and ${list.at(-1)}`;
}
