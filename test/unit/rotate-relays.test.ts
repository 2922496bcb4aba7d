import { describe, expect, it } from 'vitest';
import { rotateRelays } from '../../main/core/call-engine';

describe('rotateRelays (which relay an ICE restart tries)', () => {
  const servers = [
    { urls: ['stun:127.0.0.1:3478'] },
    { urls: ['turn:127.0.0.1:4001?transport=udp', 'turn:127.0.0.1:4002?transport=udp', 'turns:relay.example:5349'], username: 'u', credential: 'c' },
  ];

  it('puts the n-th TURN URL first on restart n, round robin, keeping credentials and STUN', () => {
    expect(rotateRelays(servers, 0)[1]!.urls[0]).toBe('turn:127.0.0.1:4001?transport=udp');
    expect(rotateRelays(servers, 1)[1]!.urls[0]).toBe('turn:127.0.0.1:4002?transport=udp');
    expect(rotateRelays(servers, 2)[1]!.urls[0]).toBe('turns:relay.example:5349');
    expect(rotateRelays(servers, 3)[1]!.urls[0]).toBe('turn:127.0.0.1:4001?transport=udp');
    const r = rotateRelays(servers, 1);
    expect(r[0]).toEqual(servers[0]);
    expect(r[1]).toMatchObject({ username: 'u', credential: 'c' });
    expect([...r[1]!.urls].sort()).toEqual([...servers[1]!.urls].sort());
  });

  it('leaves a single relay alone (a restart then tries the same relay again)', () => {
    const one = [{ urls: ['turn:127.0.0.1:4001'], username: 'u', credential: 'c' }];
    expect(rotateRelays(one, 5)).toEqual(one);
  });
});
