/**
 * `parley://` links (registered by electron-builder.yml `protocols`):
 * `parley://call/<username>` places a call. Anything else is refused —
 * a link is untrusted input from any web page or document.
 */
import { Username } from '../../common/call';

export type DeepLink = { action: 'call'; username: string };

/** Parses a link; returns undefined for anything that is not a valid Parley link. */
export function parseDeepLink(raw: string): DeepLink | undefined {
  if (raw.length > 200) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'parley:') return undefined;
  // parley://call/bob → host "call", pathname "/bob"
  const parts = [url.host, ...url.pathname.split('/')].filter(Boolean).map((p) => decodeURIComponent(p));
  if (parts.length !== 2 || parts[0] !== 'call' || url.search || url.hash) return undefined;
  const name = Username.safeParse(parts[1]!.toLowerCase());
  return name.success ? { action: 'call', username: name.data } : undefined;
}

/** The first Parley link among command-line arguments (Linux/Windows pass links as argv). */
export function deepLinkFromArgv(argv: readonly string[]): DeepLink | undefined {
  for (const a of argv) {
    if (a.startsWith('parley:')) {
      const link = parseDeepLink(a);
      if (link) return link;
    }
  }
  return undefined;
}
