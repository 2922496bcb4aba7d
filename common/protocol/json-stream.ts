/**
 * Splits a stream of concatenated JSON texts (RFC 8259) into one text per
 * value, the way shell scripts really write to a socket: one value per line,
 * several on a line, one spread over many lines (pretty-printed), the last one
 * without a newline (flushed by {@link JsonStreamSplitter.end}).
 *
 * It is an incremental tokenizer with a pushdown grammar check (RFC 8259 §2–7:
 * objects, arrays, strings with escapes, numbers, `true`/`false`/`null`), so
 * it knows where each value ends however it is laid out, and it sees a syntax
 * error at the character where it happens — not only when a closing bracket
 * never comes. The text it yields is then given to `JSON.parse` (the values it
 * yields are well-formed). After a syntax error the rest of that line is
 * reported as `garbage` and splitting resumes on the next line, so one broken
 * line costs one error and the stream goes on (a scalar at the top level is a
 * value too: `1`, `true`, `"x"`).
 *
 * Bounds: a value longer than `maxValueBytes` (UTF-16 code units, as
 * `String.length`) is reported as `oversize` as soon as it crosses the bound,
 * without waiting for its end (an endless value is refused too); after that
 * the splitter is spent and the caller should close the connection.
 */
export type JsonStreamEvent =
  | { kind: 'value'; text: string }
  /** Text that is not JSON, from where its value started to the end of the line of the error (at most 200 characters kept). */
  | { kind: 'garbage'; text: string }
  /** A value grew past the bound; the splitter takes no more input. */
  | { kind: 'oversize'; bytes: number };

/** What the grammar expects next inside a container. */
type Expect = 'value' | 'valueOrEnd' | 'key' | 'keyOrEnd' | 'colon' | 'commaOrEnd';
type Frame = { kind: 'obj' | 'arr'; expect: Expect };

const WS = new Set([' ', '\t', '\n', '\r']);
const NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/;

export class JsonStreamSplitter {
  private buf = '';
  private pos = 0;
  /** Where the current value starts in `buf`, or -1 between values. */
  private start = -1;
  private stack: Frame[] = [];
  /** The token being read: a string (with `escaped`), a number or a literal, from `tokStart`. */
  private tok: 'none' | 'string' | 'bare' = 'none';
  private tokStart = 0;
  private escaped = false;
  /** Skipping the rest of a line after a syntax error. */
  private skipping = false;
  private spent = false;

  /** @param maxValueBytes bound on one value, UTF-16 code units. */
  constructor(private readonly maxValueBytes: number) {}

  /** True after an `oversize` event: the stream cannot be resynchronised. */
  get failed(): boolean {
    return this.spent;
  }

  /** Takes the next chunk of text; returns the events it completes, in order. */
  push(chunk: string): JsonStreamEvent[] {
    if (this.spent) return [];
    this.buf += chunk;
    const out: JsonStreamEvent[] = [];
    while (this.pos < this.buf.length) {
      const c = this.buf[this.pos]!;
      if (this.skipping) {
        if (c === '\n') this.skipping = false;
        this.pos++;
        continue;
      }
      if (this.start < 0) {
        if (WS.has(c) || c === '\ufeff') {
          this.pos++;
          continue;
        }
        this.start = this.pos;
      }
      const step = this.step(c, out);
      if (step === 'error') {
        const nl = this.buf.indexOf('\n', this.pos);
        const end = nl < 0 ? this.buf.length : nl;
        out.push({ kind: 'garbage', text: this.buf.slice(this.start, Math.min(end, this.start + 200)) });
        this.reset();
        this.skipping = nl < 0;
        this.pos = nl < 0 ? this.buf.length : nl + 1;
        continue;
      }
      if (step === 'advance') this.pos++;
      if (this.start >= 0 && this.pos - this.start > this.maxValueBytes) {
        out.push({ kind: 'oversize', bytes: this.pos - this.start });
        this.spent = true;
        this.buf = '';
        return out;
      }
    }
    this.compact();
    return out;
  }

  /**
   * The writer half-closed the stream: a number or literal at the very end is
   * a value; a value still open is garbage (answered `parse_error`).
   */
  end(): JsonStreamEvent[] {
    if (this.spent || this.start < 0) return [];
    const out: JsonStreamEvent[] = [];
    if (this.tok === 'bare' && this.stack.length === 0) {
      if (this.finishBare(this.buf.length)) out.push({ kind: 'value', text: this.buf.slice(this.start).trim() });
      else out.push({ kind: 'garbage', text: this.buf.slice(this.start, this.start + 200) });
    } else {
      out.push({ kind: 'garbage', text: this.buf.slice(this.start, this.start + 200) });
    }
    this.reset();
    this.buf = '';
    this.pos = 0;
    return out;
  }

  /** One character of a value: 'advance' past it, 'again' to look at it once more, or 'error'. */
  private step(c: string, out: JsonStreamEvent[]): 'advance' | 'again' | 'error' {
    if (this.tok === 'string') {
      if (this.escaped) {
        this.escaped = false;
        return '"\\/bfnrtu'.includes(c) ? 'advance' : 'error';
      }
      if (c === '\\') this.escaped = true;
      else if (c === '"') {
        this.tok = 'none';
        this.pos++;
        return this.completed(out) ? 'again' : 'error';
      } else if (c < ' ') return 'error'; // a raw control character (a newline) cannot be inside a string
      return 'advance';
    }
    if (this.tok === 'bare') {
      if (/[0-9a-zA-Z.+-]/.test(c)) return 'advance';
      if (!this.finishBare(this.pos)) return 'error';
      this.tok = 'none';
      return this.completed(out) ? 'again' : 'error';
    }
    if (WS.has(c)) return 'advance';
    const top = this.stack[this.stack.length - 1];
    const expect: Expect = top ? top.expect : 'value';
    const wantsValue = expect === 'value' || expect === 'valueOrEnd';
    if (c === '"') {
      if (!wantsValue && expect !== 'key' && expect !== 'keyOrEnd') return 'error';
      this.tok = 'string';
      this.tokStart = this.pos;
      return 'advance';
    }
    if (c === '{' || c === '[') {
      if (!wantsValue) return 'error';
      this.stack.push({ kind: c === '{' ? 'obj' : 'arr', expect: c === '{' ? 'keyOrEnd' : 'valueOrEnd' });
      return 'advance';
    }
    if (c === '}' || c === ']') {
      const kind = c === '}' ? 'obj' : 'arr';
      if (!top || top.kind !== kind || (expect !== 'commaOrEnd' && expect !== 'keyOrEnd' && expect !== 'valueOrEnd')) return 'error';
      if (kind === 'obj' && expect === 'valueOrEnd') return 'error';
      if (kind === 'arr' && expect === 'keyOrEnd') return 'error';
      this.stack.pop();
      this.pos++;
      return this.completed(out) ? 'again' : 'error';
    }
    if (c === ',') {
      if (!top || expect !== 'commaOrEnd') return 'error';
      top.expect = top.kind === 'obj' ? 'key' : 'value';
      return 'advance';
    }
    if (c === ':') {
      if (!top || expect !== 'colon') return 'error';
      top.expect = 'value';
      return 'advance';
    }
    if (/[-0-9tfn]/.test(c) && wantsValue) {
      this.tok = 'bare';
      this.tokStart = this.pos;
      return 'advance';
    }
    return 'error';
  }

  /** Is the bare token ending at `end` a number or a literal? */
  private finishBare(end: number): boolean {
    const t = this.buf.slice(this.tokStart, end);
    return t === 'true' || t === 'false' || t === 'null' || NUMBER.test(t);
  }

  /**
   * A token or container just ended (`pos` is past it): move the parent on, or
   * emit the value when it was the top level. False when a string stood where
   * only a key fits and the grammar says otherwise (never, kept for safety).
   */
  private completed(out: JsonStreamEvent[]): boolean {
    const top = this.stack[this.stack.length - 1];
    if (!top) {
      out.push({ kind: 'value', text: this.buf.slice(this.start, this.pos) });
      this.reset();
      return true;
    }
    if (top.expect === 'key' || top.expect === 'keyOrEnd') top.expect = 'colon';
    else top.expect = 'commaOrEnd';
    return true;
  }

  private reset(): void {
    this.start = -1;
    this.stack = [];
    this.tok = 'none';
    this.escaped = false;
  }

  /** Drops what was consumed; keeps only the unfinished value. */
  private compact(): void {
    const keep = this.start >= 0 ? this.start : this.pos;
    if (keep === 0) return;
    this.buf = this.buf.slice(keep);
    this.pos -= keep;
    this.tokStart -= keep;
    if (this.start >= 0) this.start = 0;
  }
}
