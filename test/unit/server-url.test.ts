import { describe, expect, it } from 'vitest';
import { ParleyError } from '../../common/errors';
import { checkServerUrl, httpBaseOf, isLoopbackHost, signalingUrlOf } from '../../common/server-url';

/** [address, accepted?] — ws/wss/http/https × loopback/remote/IPv6/localhost/look-alike hostnames. */
const TABLE: [string, boolean][] = [
  // TLS: always accepted
  ['https://parley.example.org', true],
  ['wss://parley.example.org', true],
  ['https://parley.example.org:8443/base/', true],
  ['https://203.0.113.7', true],
  ['https://[2001:db8::1]:8443', true],
  ['https://127.0.0.1:8787', true],
  ['wss://localhost', true],
  // plain to loopback: accepted
  ['http://127.0.0.1:8787', true],
  ['ws://127.0.0.1:8787', true],
  ['http://127.255.255.254', true],
  ['http://127.1', true], // WHATWG URL: 127.0.0.1
  ['http://2130706433/', true], // 127.0.0.1 in decimal
  ['http://0x7f000001/', true], // 127.0.0.1 in hex
  ['http://localhost:8787', true],
  ['http://LOCALHOST:8787', true],
  ['ws://localhost', true],
  ['http://[::1]:8787', true],
  ['ws://[::1]', true],
  ['http://[0:0:0:0:0:0:0:1]', true],
  // plain to anything else: refused
  ['http://parley.example.org', false],
  ['ws://parley.example.org', false],
  ['http://203.0.113.7:8787', false],
  ['ws://10.0.0.2', false],
  ['http://192.168.1.20', false],
  ['http://0.0.0.0:8787', false],
  ['http://128.0.0.1', false],
  ['http://[2001:db8::1]', false],
  ['ws://[fe80::1]', false],
  ['http://[::ffff:127.0.0.1]', false], // IPv4-mapped: kept out, to stay simple
  ['http://127.0.0.1.evil.com', false],
  ['ws://127.0.0.1.evil.com', false],
  ['http://127.0.0.1@evil.com', false], // user info, host is evil.com
  ['http://localhost.evil.com', false],
  ['http://evil.localhost', false],
  ['http://localhost@evil.com', false],
  // not a server address at all
  ['ftp://parley.example.org', false],
  ['file:///etc/passwd', false],
  ['parley.example.org', false],
  ['', false],
];

describe('the server address rule (https:// except on loopback)', () => {
  it.each(TABLE)('%s → accepted: %s', (address, accepted) => {
    if (accepted) {
      expect(checkServerUrl(address)).toBeInstanceOf(URL);
      return;
    }
    let error: unknown;
    try {
      checkServerUrl(address);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ParleyError);
    expect((error as ParleyError).reason).toBe('invalid_params');
  });

  it.each([
    ['http://parley.example.org:8787', 'http://parley.example.org:8787 must use https://'],
    ['ws://parley.example.org', 'ws://parley.example.org must use wss://'],
    ['http://127.0.0.1.evil.com', 'http://127.0.0.1.evil.com must use https://'],
  ])('says what to do for %s', (address, words) => {
    expect(() => checkServerUrl(address)).toThrow(words);
    expect(() => checkServerUrl(address)).toThrow(/allowed only for this computer/);
  });

  it('never repeats a password written into the address', () => {
    expect(() => checkServerUrl('http://alice:hunter2@parley.example.org')).toThrow(ParleyError);
    expect(() => checkServerUrl('http://alice:hunter2@parley.example.org')).not.toThrow(/hunter2/);
  });

  it('signals over wss:// for every TLS address and over ws:// only for a plain loopback one', () => {
    expect(signalingUrlOf(checkServerUrl('https://parley.example.org/')).href).toBe('wss://parley.example.org/v1/signal');
    expect(signalingUrlOf(checkServerUrl('wss://parley.example.org')).href).toBe('wss://parley.example.org/v1/signal');
    expect(signalingUrlOf(checkServerUrl('http://127.0.0.1:8787')).href).toBe('ws://127.0.0.1:8787/v1/signal');
    expect(httpBaseOf(checkServerUrl('wss://parley.example.org')).protocol).toBe('https:');
    expect(httpBaseOf(checkServerUrl('ws://[::1]:8787')).href).toBe('http://[::1]:8787/');
  });

  it.each([
    ['localhost', true],
    ['127.0.0.1', true],
    ['[::1]', true],
    ['127.0.0.256', false],
    ['127.0.0.1.evil.com', false],
    ['localhost.', false],
  ])('isLoopbackHost(%s) is %s', (host, loopback) => {
    expect(isLoopbackHost(host)).toBe(loopback);
  });
});
