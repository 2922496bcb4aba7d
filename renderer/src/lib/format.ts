/** Formatting helpers for the screens (pure; unit-tested with the renderer's build). */

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
