/**
 * A knock through a call link (main/core/room-client.ts `joinByLink`) when the
 * host answers at once: the server's reply to `room.knock` and the host's
 * `room.knock_answered` can arrive in one read of a busy socket, so the
 * notification is handled before the reply's continuation runs. The CI run of
 * 2026-12-06 lost the answer that way (group-ring.test: the daemon waited for
 * an answer that had already come). The signaling client is outside the
 * subject here: a stand-in delivers exactly that order.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { RoomClient } from '../../main/core/room-client';

const ROOM = '3f2a9c1e-5b7d-4e21-9a0b-6c8d7e9f1a2b';
const LINK = `parley://room/${ROOM}?t=${'A'.repeat(43)}`;

/** A signaling client whose `room.knock` reply is followed, before its awaiter resumes, by `answerFirst`'s notification. */
function signaling(answerFirst: { admitted: boolean } | undefined) {
  const s = new EventEmitter() as EventEmitter & Record<string, unknown>;
  const requests: string[] = [];
  Object.assign(s, {
    state: 'online',
    reconnectNow: () => {},
    request: (method: string) => {
      requests.push(method);
      if (method !== 'room.knock') return Promise.reject(new Error(`unexpected ${method}`));
      return Promise.resolve({ knockId: 'k1', state: 'waiting' }).then((reply) => {
        // Handled in the same read as the reply, ahead of the caller's continuation.
        if (answerFirst) s.emit('room.knock_answered', { roomId: ROOM, knockId: 'k1', admitted: answerFirst.admitted });
        return reply;
      });
    },
  });
  return { s, requests };
}

function client(s: unknown): RoomClient {
  return new RoomClient(s as never, {} as never, {} as never, { username: 'bob', deviceId: 'd1' });
}

describe('a knock answered before its reply was handled', () => {
  it('a denial that came first is kept and ends the join at once, with the words the user reads', async () => {
    const { s, requests } = signaling({ admitted: false });
    const t0 = Date.now();
    await expect(client(s).joinByLink(LINK)).rejects.toThrow(/did not let you into the call/);
    expect(Date.now() - t0).toBeLessThan(1000); // not the 5 min cap: the answer was not lost
    expect(requests).toEqual(['room.knock']);
  });

  it('an answer that comes after the reply still settles the knock', async () => {
    const { s } = signaling(undefined);
    const joining = client(s).joinByLink(LINK);
    await new Promise((r) => setTimeout(r, 10));
    s.emit('room.knock_answered', { roomId: ROOM, knockId: 'k1', admitted: false });
    await expect(joining).rejects.toThrow(/did not let you into the call/);
  });
});
