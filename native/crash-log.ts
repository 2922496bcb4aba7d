/**
 * Where a crash in native code (SIGSEGV in an addon: PortAudio, libpulse,
 * libopus, WebRTC APM) leaves its backtrace: `segfault-handler`, the package
 * naudiodon depends on for this, installed once per process with a path the
 * caller chooses — the daemon's data folder — instead of the `crash.log`
 * naudiodon would write into whatever folder the user started Parley from.
 *
 * The handler appends the signal, the faulting address and up to 32 frames
 * (glibc `backtrace_symbols_fd`) to the file, prints the same on stderr, and
 * lets the process die as it would have (`SA_RESETHAND`). It replaces Node's
 * own SIGSEGV handler, which V8 uses only to turn a WebAssembly module's
 * out-of-bounds memory access into an exception; the only WebAssembly in the
 * daemon is Node's HTTP parser behind `fetch` (sign-in), which makes no such
 * access unless it is itself broken.
 */
import { createRequire } from 'node:module';
import { isMainThread } from 'node:worker_threads';

/** segfault-handler copies at most this many bytes of the path (a fixed buffer, 127 + NUL). */
export const CRASH_LOG_PATH_MAX_BYTES = 127;

interface SegfaultHandler {
  registerHandler(path: string): void;
}

/**
 * The real segfault-handler module, loaded through naudiodon's dependency tree,
 * or undefined when it is not installed. It is not context-aware: load it on
 * the main thread only (a second thread gets "Module did not self-register").
 */
function loadSegfaultHandler(): SegfaultHandler | undefined {
  try {
    const fromNaudiodon = createRequire(createRequire(import.meta.url).resolve('naudiodon/package.json'));
    const path = fromNaudiodon.resolve('segfault-handler');
    // native/audio-device may have put its do-nothing stand-in there for naudiodon: keep it for naudiodon.
    const cached = fromNaudiodon.cache[path];
    delete fromNaudiodon.cache[path];
    try {
      return fromNaudiodon(path) as SegfaultHandler;
    } finally {
      if (cached) fromNaudiodon.cache[path] = cached;
    }
  } catch {
    return undefined;
  }
}

let installedAt: string | undefined;

/**
 * Installs the process's native crash handler, writing to `path` (absolute).
 * Call once from the main thread at start-up (the handler keeps its first path:
 * it copies a new one over the old without clearing the rest).
 * @returns the path in use, or a reason it was not installed (`not main thread`,
 *   `path too long`, `already installed`, `segfault-handler is not installed`). Never throws.
 */
export function installCrashLog(path: string): { path: string } | { reason: string } {
  if (!isMainThread) return { reason: 'not main thread' };
  if (installedAt !== undefined) return installedAt === path ? { path } : { reason: `already installed (${installedAt})` };
  if (Buffer.byteLength(path) > CRASH_LOG_PATH_MAX_BYTES) return { reason: `path too long (over ${CRASH_LOG_PATH_MAX_BYTES} bytes)` };
  const handler = loadSegfaultHandler();
  if (!handler) return { reason: 'segfault-handler is not installed' };
  handler.registerHandler(path);
  installedAt = path;
  return { path };
}
