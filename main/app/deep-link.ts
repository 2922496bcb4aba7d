/**
 * `parley://` links (registered by electron-builder.yml `protocols`):
 * `parley://call/<username>` offers to place a call. Anything else is refused —
 * a link is untrusted input from any web page or document, so a valid one
 * never calls by itself either: the user is asked first, in a dialog that
 * names the callee and whose default (Enter, Escape, closing it) is Cancel
 * ({@link callConfirmation}); one question at a time ({@link DeepLinkGate}).
 * Pure (no electron): main/app/index.ts shows the dialog.
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

/**
 * The question asked before a link places a call, in the shape of Electron's
 * `MessageBoxOptions` (main/app/index.ts passes it to `dialog.showMessageBox`).
 * Button 0 is "Cancel" and is both the default (`defaultId`, Enter) and the
 * answer when the dialog is dismissed (`cancelId`, Escape / closing it), so
 * only a deliberate click on "Call <username>" places the call.
 */
export interface CallConfirmation {
  type: 'question';
  title: string;
  message: string;
  detail: string;
  buttons: [cancel: 'Cancel', call: string];
  defaultId: 0;
  cancelId: 0;
  noLink: true;
}

/** The confirmation for `link`; it names the callee in the message and on the button. */
export function callConfirmation(link: DeepLink): CallConfirmation {
  return {
    type: 'question',
    title: 'Parley — call from a link',
    message: `Call ${link.username}?`,
    detail: `A parley:// link asks Parley to call ${link.username}. Nothing is dialled unless you choose "Call ${link.username}".`,
    buttons: ['Cancel', `Call ${link.username}`],
    defaultId: 0,
    cancelId: 0,
    noLink: true,
  };
}

/**
 * The username to call after the user answered {@link callConfirmation}:
 * `response` is the index of the button chosen (Electron's
 * `MessageBoxReturnValue.response`). Only 1 ("Call …") calls; 0 (Cancel,
 * Escape, closed) and anything unexpected call nobody.
 */
export function confirmedCallee(link: DeepLink, response: number): string | undefined {
  return response === 1 ? link.username : undefined;
}

/**
 * One link question at a time: while a confirmation is open, further links
 * (a page firing the same link in a loop, or many) are dropped instead of
 * stacking dialogs that a hurried click could confirm.
 */
export class DeepLinkGate {
  private open = false;

  /** Whether to ask about `link` now (true: the caller must {@link settle} when answered); false while a question is open. */
  offer(link: DeepLink | undefined): link is DeepLink {
    if (!link || this.open) return false;
    this.open = true;
    return true;
  }

  /** The open question was answered (either way): the next link may ask. */
  settle(): void {
    this.open = false;
  }
}
