/**
 * Call links as the client reads them (`parseRoomLink`, main/core/room-client.ts):
 * `parley://room/<roomId>?t=<token>` (docs/group-calls.md, "Call links").
 */
import { describe, expect, it } from 'vitest';
import { ParleyError } from '../../common/errors';
import { parseRoomLink } from '../../main/core/room-client';

const ROOM = '3f2a9c1e-5b7d-4e21-9a0b-6c8d7e9f1a2b';
const TOKEN = 'A'.repeat(20) + '-_' + 'z9'.repeat(10) + 'q';

describe('parseRoomLink', () => {
  it.each([
    [`parley://room/${ROOM}?t=${TOKEN}`, 'the server-made form'],
    [`  parley://room/${ROOM.toUpperCase()}?t=${TOKEN}\n`, 'pasted with spaces, an upper-case id'],
    [`parley://room/${ROOM}?x=1&t=${TOKEN}&y=2`, 'with other query parameters'],
  ])('reads %s (%s)', (url) => {
    expect(TOKEN).toHaveLength(43);
    expect(parseRoomLink(url)).toEqual({ roomId: ROOM, token: TOKEN });
  });

  it.each([
    [`https://room/${ROOM}?t=${TOKEN}`],
    [`parley://room/${ROOM}`],
    [`parley://room/not-a-room?t=${TOKEN}`],
    [`parley://room/${ROOM}?t=${TOKEN.slice(1)}`],
    [`parley://room/${ROOM}?t=${TOKEN}x`],
    [`parley://room/${ROOM}?t=${TOKEN.slice(1)}=`],
    [''],
  ])('refuses %j with invalid_params and a sentence saying what a link looks like', (url) => {
    let err: unknown;
    try {
      parseRoomLink(url);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ParleyError);
    expect((err as ParleyError).reason).toBe('invalid_params');
    expect((err as ParleyError).message).toMatch(/parley:\/\/room\/<room id>\?t=<token>/);
  });
});
