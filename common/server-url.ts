import { ParleyError } from './errors';

/**
 * The one rule for the address of a Parley server, applied wherever an address
 * enters the client (account.register/login, the saved profile, the signaling
 * client): passwords, device tokens and sealed envelopes travel only over TLS
 * (`https://`, `wss://`). Plain `http://` / `ws://` is accepted only for this
 * computer — `localhost`, 127.0.0.0/8 and `[::1]` — where nobody else is on the
 * path (development, tests, a server on the same machine).
 *
 * Addresses are judged after WHATWG URL parsing, as fetch and ws will use them:
 * `http://2130706433/` is 127.0.0.1 (loopback), `http://127.0.0.1.evil.com/`
 * and `http://127.0.0.1@evil.com/` are evil.com (not loopback). `localhost`
 * means exactly that name (W3C Secure Contexts §3.3 treats it as loopback);
 * `*.localhost` and IPv4-mapped `[::ffff:127.0.0.1]` are refused to stay simple.
 */

/** Schemes a server address may have; the secure ones need no further check. */
const SCHEMES = new Set(['https:', 'wss:', 'http:', 'ws:']);
const SECURE = new Set(['https:', 'wss:']);

/** Whether a WHATWG-parsed `URL.hostname` names this computer: `localhost`, 127.0.0.0/8 or `[::1]`. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase();
  if (h === 'localhost' || h === '[::1]' || h === '::1') return true;
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  return !!m && m.slice(1).every((octet) => Number(octet) <= 255);
}

/**
 * Parses a server address and enforces the TLS rule above.
 * @param input what the user typed or the profile holds, e.g. `https://parley.example.org`.
 * @returns the parsed URL (any of https, wss, http, ws; plain only on loopback).
 * @throws ParleyError `invalid_params` with a message for the user: not an
 *   address, an unsupported scheme, or plain http/ws to another computer
 *   ("… must use https:// …"). The message never repeats a password given in the URL.
 */
export function checkServerUrl(input: string): URL {
  let url: URL;
  try {
    url = new URL(input.trim());
  } catch {
    throw new ParleyError(
      'invalid_params',
      'that is not a server address; enter one such as https://parley.example.org',
    );
  }
  const shown = `${url.protocol}//${url.host}`;
  if (!SCHEMES.has(url.protocol)) {
    throw new ParleyError(
      'invalid_params',
      `the server address ${shown} must use https:// (for example https://parley.example.org)`,
    );
  }
  if (!SECURE.has(url.protocol) && !isLoopbackHost(url.hostname)) {
    const secure = url.protocol === 'ws:' ? 'wss://' : 'https://';
    throw new ParleyError(
      'invalid_params',
      `the server address ${shown} must use ${secure} — without encryption anyone on the ` +
        `network could read your password. Plain ${url.protocol}// is allowed only for this ` +
        'computer (localhost, 127.0.0.1, [::1])',
    );
  }
  return url;
}

/** The HTTP(S) base of a checked server address: `wss:` → `https:`, `ws:` → `http:`; others unchanged. */
export function httpBaseOf(url: URL): URL {
  const out = new URL(url.href);
  if (out.protocol === 'wss:') out.protocol = 'https:';
  if (out.protocol === 'ws:') out.protocol = 'http:';
  return out;
}

/**
 * The signaling WebSocket URL (`/v1/signal`) of a checked server address:
 * `wss:` for an `https:` or `wss:` address, `ws:` only for a plain one (never a downgrade).
 */
export function signalingUrlOf(url: URL): URL {
  const out = new URL('/v1/signal', url.href);
  out.protocol = SECURE.has(url.protocol) ? 'wss:' : 'ws:';
  return out;
}
