import { describe, expect, it } from 'vitest';
import { ParleyError, ErrorCode } from '../../common/errors';
import { WebrtcRequests, callTokens, formatDuration, guideError, parseDuration, MAX_SDP_LENGTH } from '../../common/protocol/webrtc-api';

describe('webrtc.* schemas (the ArmorClaw voice guide)', () => {
  it('take the guide examples as written', () => {
    expect(WebrtcRequests['webrtc.create_call'].params.parse({ room_id: '!abc123:matrix.example.com', offer_sdp: 'v=0\r\n', user_id: '@user:matrix.example.com' })).toEqual({
      room_id: '!abc123:matrix.example.com',
      offer_sdp: 'v=0\r\n',
      user_id: 'user',
    });
    expect(WebrtcRequests['webrtc.answer_call'].params.parse({ call_id: 'call-uuid-123', answer_sdp: 'v=0' }).call_id).toBe('call-uuid-123');
    expect(WebrtcRequests['webrtc.reject_call'].params.parse({ call_id: 'call-uuid-123', reason: 'user declined' }).reason).toBe('user declined');
    expect(WebrtcRequests['webrtc.end_call'].params.parse({ call_id: 'call-uuid-123', reason: 'call completed' }).reason).toBe('call completed');
    expect(
      WebrtcRequests['webrtc.send_candidates'].params.parse({
        call_id: 'call-uuid-123',
        candidates: [{ candidate: 'candidate:1 1 UDP 2130706431 192.168.1.1 54321 typ host', sdp_mid: '0', sdp_mline_index: 0 }],
      }).candidates,
    ).toHaveLength(1);
    expect(WebrtcRequests['webrtc.get_call_status'].params.parse({ call_id: 'call-uuid-123' })).toEqual({ call_id: 'call-uuid-123' });
    expect(WebrtcRequests['webrtc.list'].params.parse(undefined)).toEqual({});
    expect(WebrtcRequests['webrtc.get_audit_log'].params.parse(undefined)).toEqual({ limit: 100, offset: 0 });
  });

  it('refuse wrong types, a create_call with neither user_id nor offer_sdp, and oversized SDP', () => {
    expect(WebrtcRequests['webrtc.get_call_status'].params.safeParse({ call_id: 42 }).success).toBe(false);
    expect(WebrtcRequests['webrtc.create_call'].params.safeParse({ room_id: '!x' }).success).toBe(false);
    expect(WebrtcRequests['webrtc.create_call'].params.safeParse({ offer_sdp: 'v'.repeat(MAX_SDP_LENGTH + 1) }).success).toBe(false);
    expect(WebrtcRequests['webrtc.get_audit_log'].params.safeParse({ limit: 0 }).success).toBe(false);
  });
});

describe('guideError', () => {
  const table: [ParleyError, string][] = [
    [new ParleyError('call_not_found', 'no such call'), 'ErrCallNotFound'],
    [new ParleyError('invalid_state', 'that call is not ringing'), 'ErrInvalidState'],
    [new ParleyError('rate_limited', 'slow down', { retryAfter: 7 }), 'ErrRateLimitExceeded'],
    [new ParleyError('policy', "you have used today's call time (60 min); it renews at midnight UTC"), 'ErrBudgetExceeded'],
    [new ParleyError('policy', 'too many concurrent calls'), 'ErrMaxConcurrentCallsExceeded'],
    [new ParleyError('policy', 'blocked by the server'), 'ErrSecurityPolicyViolation'],
    [new ParleyError('key_changed', "alice's key changed"), 'ErrSecurityPolicyViolation'],
    [new ParleyError('invalid_params', 'bad'), 'ErrInvalidParams'],
  ];
  for (const [err, name] of table) {
    it(`names ${err.reason} (${err.message}) ${name}, keeping Parley's code`, () => {
      const g = guideError(err);
      expect(g.data.name).toBe(name);
      expect(g.code).toBe(err.code);
      expect(g.data.reason).toBe(err.reason);
    });
  }
  it('keeps retry_after with ErrRateLimitExceeded', () => {
    expect(guideError(new ParleyError('rate_limited', 'x', { retryAfter: 7 })).data).toMatchObject({ retry_after: 7, retryAfter: 7 });
  });
  it('names a second live call ErrMaxConcurrentCallsExceeded when creating', () => {
    const g = guideError(new ParleyError('invalid_state', 'already in a call with bob; end it first'), { creating: true });
    expect(g.data.name).toBe('ErrMaxConcurrentCallsExceeded');
    expect(g.code).toBe(ErrorCode.INVALID_STATE);
  });
});

describe('durations and tokens', () => {
  it('formats and parses the guide’s durations', () => {
    expect(formatDuration(323)).toBe('5m23s');
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(3605)).toBe('1h0m5s');
    expect(formatDuration(1800, true)).toBe('30m');
    expect(formatDuration(5400, true)).toBe('1h30m');
    expect(formatDuration(0, true)).toBe('0s');
    expect(formatDuration(8, true)).toBe('8s');
    expect(parseDuration('30m')).toBe(1800);
    expect(parseDuration('1h30m')).toBe(5400);
    expect(() => parseDuration('soon')).toThrow(ParleyError);
  });
  it('counts 1 token per second of connected call', () => {
    const t = callTokens({ callId: 'x', direction: 'outgoing', peer: 'bob', state: 'active', createdAt: 0, connectedAt: 1000 } as never, 3600, 324_000);
    expect(t).toEqual({ used: 323, remaining: 3277, duration: '5m23s' });
  });
});
