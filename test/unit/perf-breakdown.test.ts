/**
 * `npm run bench:profile -- --perf` (bench/perf-breakdown.ts): `perf script`
 * stacks parsed and each sample given to one component and one kind of code.
 * The stacks are four real samples of a media thread (2026-12-07), cut short.
 */
import { describe, expect, it } from 'vitest';
import { codeKind, MEDIA_COMPONENTS, parsePerfScript, shares } from '../../bench/perf-breakdown';

const SCRIPT = `parley-media  5215 12052.616361:    1001001 cpu-clock:ppp: 
\t           3c387 quant_all_bands+0x267 (/x/node_modules/@discordjs/opus/prebuild/opus.node)
\t           1d59a opus_encode_native+0x40aa (/x/node_modules/@discordjs/opus/prebuild/opus.node)
\t    7fd59817453f JS:^encode file:///x/out/cli/media-worker.mjs:644:11+0x43f (/tmp/perf-5195.map)
\t    7fd598176bb5 JS:^push file:///x/out/cli/media-worker.mjs:2203:7+0x5b5 (/tmp/perf-5195.map)
\t          b68649 v8impl::(anonymous namespace)::ThreadSafeFunction::AsyncCb+0x199 (/x/node)
\t         1951884 uv__io_poll+0x374 (/x/node)

parley-media  5215 12052.696158:    1001001 cpu-clock:ppp: 
\tffffffff8209e117 udp_sendmsg+0xaf7 ([kernel.kallsyms])
\t          10ac4d __libc_sendmsg+0x4d (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t    7fd598121736 JS:^doSend node:dgram:716:16+0x636 (/tmp/perf-5195.map)
\t    7fd5981733d2 JS:^writeRtp file:///x/node_modules/werift/lib/index.mjs:13949:14+0x2d2 (/tmp/perf-5195.map)
\t    7fd598177115 JS:^push file:///x/out/cli/media-worker.mjs:2203:7+0xb15 (/tmp/perf-5195.map)
\t          b68649 v8impl::(anonymous namespace)::ThreadSafeFunction::AsyncCb+0x199 (/x/node)

parley-media  5215 12053.228163:    1001001 cpu-clock:ppp: 
\tffffffff813aecec finish_task_switch.isra.0+0xac ([kernel.kallsyms])
\tffffffff81758d7e do_epoll_wait+0x55e ([kernel.kallsyms])
\t          108cae epoll_pwait+0x6e (/usr/lib/x86_64-linux-gnu/libc.so.6)

parley-media  5215 12053.301442:    1001001 cpu-clock:ppp: 
\t           2b0f1 silk_decode_core+0x1a1 (/usr/lib/x86_64-linux-gnu/libopus.so.0.8.0)
`;

describe('perf breakdown of the media thread', () => {
  const stacks = parsePerfScript(SCRIPT);
  const component = (i: number) => MEDIA_COMPONENTS.find((c) => c.test(stacks[i]!))?.name;

  it('parses each sample into its frames, leaf first, offsets dropped', () => {
    expect(stacks.map((s) => s.length)).toEqual([6, 6, 3, 1]);
    expect(stacks[0]![0]).toEqual({ symbol: 'quant_all_bands', dso: '/x/node_modules/@discordjs/opus/prebuild/opus.node' });
    expect(stacks[1]![2]!.symbol).toBe('JS:^doSend node:dgram:716:16');
  });

  it.each([
    [0, 'Opus encode (libopus)', 'libopus'],
    [1, 'RTP send: werift RTP, RED, SRTP, UDP', 'kernel'],
    [2, 'event loop (epoll, libuv)', 'kernel'],
    [3, 'Opus decode (libopus)', 'libopus'],
  ])('sample %i: component %s, leaf %s', (i, name, kind) => {
    expect(component(i)).toBe(name);
    expect(codeKind(stacks[i]![0]!)).toBe(kind);
  });

  it('gives each key its share of the samples, summing to 1', () => {
    const rows = shares(stacks, (s) => codeKind(s[0]!));
    expect(new Map(rows)).toEqual(new Map([['libopus', 0.5], ['kernel', 0.5]]));
    expect(shares(stacks, (s) => MEDIA_COMPONENTS.find((c) => c.test(s))!.name).map(([, v]) => v)).toEqual([0.25, 0.25, 0.25, 0.25]);
    expect(rows.reduce((a, [, v]) => a + v, 0)).toBeCloseTo(1, 9);
  });
});
