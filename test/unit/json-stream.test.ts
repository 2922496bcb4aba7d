import { describe, expect, it } from 'vitest';
import { JsonStreamSplitter, type JsonStreamEvent } from '../../common/protocol/json-stream';

const values = (evs: JsonStreamEvent[]) => evs.filter((e) => e.kind === 'value').map((e) => (e as { text: string }).text);

/** Feeds `text` in chunks of `size` characters, then ends the stream. */
function split(text: string, size = text.length, max = 1024): JsonStreamEvent[] {
  const s = new JsonStreamSplitter(max);
  const out: JsonStreamEvent[] = [];
  for (let i = 0; i < text.length; i += size) out.push(...s.push(text.slice(i, i + size)));
  out.push(...s.end());
  return out;
}

describe('JsonStreamSplitter', () => {
  const a = '{"jsonrpc":"2.0","id":1,"method":"webrtc.list"}';
  const b = '{"jsonrpc":"2.0","id":2,"method":"get_status","params":{"x":"} { ] \\" \\\\"}}';
  const cases: [string, string, string[]][] = [
    ['one per line', `${a}\n${b}\n`, [a, b]],
    ['several on one line', `${a}${b} ${a}`, [a, b, a]],
    ['the last one without a newline', `${a}\n${b}`, [a, b]],
    ['one over many lines (pretty-printed)', JSON.stringify(JSON.parse(b), null, 2) + '\n', [JSON.stringify(JSON.parse(b), null, 2)]],
    ['CRLF and a BOM', `\ufeff${a}\r\n${b}\r\n`, [a, b]],
    ['a batch array', `[${a},${b}]\n`, [`[${a},${b}]`]],
    ['top-level scalars end at whitespace', '1 true "x y"\n', ['1', 'true', '"x y"']],
    ['braces and quotes inside strings do not count', '{"a":"}}]]\\"{"}\n', ['{"a":"}}]]\\"{"}']],
  ];
  for (const [name, text, expected] of cases) {
    it(`splits ${name}, in one chunk and byte by byte`, () => {
      expect(values(split(text))).toEqual(expected);
      expect(values(split(text, 1))).toEqual(expected);
      expect(values(split(text, 7))).toEqual(expected);
    });
  }

  it('reports a stray closing bracket as garbage and goes on', () => {
    const evs = split(`}} nonsense\n${a}\n`);
    expect(evs[0]).toMatchObject({ kind: 'garbage' });
    expect(values(evs)).toEqual([a]);
  });

  const broken: [string, string, string[]][] = [
    ['a line that is not JSON', '{not json\n{"a":1}\n', ['{"a":1}']],
    ['a trailing comma', '{"a":1,}\n[1]\n', ['[1]']],
    ['a raw newline inside a string', '{"a":"x\n"}\n{"b":2}\n', ['{"b":2}']],
    ['a bad literal', 'nope\n2\n', ['2']],
    ['a missing colon', '{"a" 1}\n{"c":3}', ['{"c":3}']],
  ];
  for (const [what, text, expected] of broken) {
    it(`reports ${what} as garbage and resumes on the next line`, () => {
      const evs = split(text, 3);
      expect(evs.some((e) => e.kind === 'garbage')).toBe(true);
      expect(values(evs)).toEqual(expected);
    });
  }

  it('reports a value cut off by the end of the stream as garbage', () => {
    expect(split('{"jsonrpc":"2.0","id":1')).toEqual([{ kind: 'garbage', text: '{"jsonrpc":"2.0","id":1' }]);
  });

  it('refuses an oversize value as soon as it crosses the bound, and takes nothing more', () => {
    const s = new JsonStreamSplitter(100);
    const evs = s.push('{"a":"' + 'x'.repeat(200));
    expect(evs).toEqual([{ kind: 'oversize', bytes: 101 }]);
    expect(s.failed).toBe(true);
    expect(s.push('"}\n' + a)).toEqual([]);
  });

  it('refuses an endless value fed in small chunks without holding more than the bound', () => {
    const s = new JsonStreamSplitter(1000);
    let evs: JsonStreamEvent[] = [];
    for (let i = 0; i < 100 && evs.length === 0; i++) evs = s.push('[[[[[[[[[[' + '1,'.repeat(20));
    expect(evs[0]).toMatchObject({ kind: 'oversize' });
  });
});
