/**
 * The media thread's priority request (main/media/priority.ts): setpriority
 * for every thread first, RTKit when that is refused, and a plain reason when
 * neither works — never an exception. The D-Bus side (RTKit on the system
 * bus) is outside the subject and faked here; the real setpriority path is
 * checked on a running daemon in test/integration/control-socket.test.ts.
 */
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { loadPulseAddon } from '../../native/pulse';
import { MEDIA_NICE, MEDIA_RT_PRIORITY, raiseMediaPriority, raiseToRealtime, type PriorityDeps, type RealtimeDeps, type RealtimeResult } from '../../main/media/priority';

function deps(over: Partial<PriorityDeps>, log: string[]): PriorityDeps {
  return {
    setThreadNice: (tid, nice) => void log.push(`nice ${tid} ${nice}`),
    rtkitHighPriority: async (tid, nice) => void log.push(`rtkit ${tid} ${nice}`),
    threads: () => [100, 101, 102],
    platform: 'linux',
    ...over,
  };
}
const eacces = () => {
  throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
};

describe('raiseMediaPriority', () => {
  const rows: { name: string; over: Partial<PriorityDeps>; method: string; log: string[] }[] = [
    { name: 'allowed (root, CAP_SYS_NICE): every thread, main first', over: {}, method: 'setpriority', log: [`nice 100 ${MEDIA_NICE}`, `nice 101 ${MEDIA_NICE}`, `nice 102 ${MEDIA_NICE}`] },
    {
      name: 'refused: RTKit for every thread, main first',
      over: { setThreadNice: eacces },
      method: 'rtkit',
      log: [`rtkit 100 ${MEDIA_NICE}`, `rtkit 101 ${MEDIA_NICE}`, `rtkit 102 ${MEDIA_NICE}`],
    },
    {
      name: 'refused and no RTKit: normal priority, with both reasons',
      over: { setThreadNice: eacces, rtkitHighPriority: async () => Promise.reject(new Error('The name org.freedesktop.RealtimeKit1 was not provided')) },
      method: 'none',
      log: [],
    },
    { name: 'not Linux: nothing tried', over: { platform: 'darwin' }, method: 'none', log: [] },
  ];
  for (const row of rows) {
    it(row.name, async () => {
      const log: string[] = [];
      const r = await raiseMediaPriority(deps(row.over, log));
      expect(r.method).toBe(row.method);
      expect(log).toEqual(row.log);
      if (r.method === 'none') expect(r.reason.length).toBeGreaterThan(5);
    });
  }
  it('says why in words when both ways are refused', async () => {
    const r = await raiseMediaPriority(deps({ setThreadNice: eacces, rtkitHighPriority: async () => Promise.reject(new Error('no answer from RTKit within 2 s')) }, []));
    expect(r).toEqual({ method: 'none', reason: 'setpriority: EACCES: permission denied; RTKit: no answer from RTKit within 2 s' });
  });
  it('a thread that ended between listing and raising does not spoil the rest', async () => {
    const log: string[] = [];
    const r = await raiseMediaPriority(deps({ setThreadNice: (tid, n) => { if (tid === 101) throw new Error('ESRCH'); log.push(`nice ${tid} ${n}`); } }, log));
    expect(r.method).toBe('setpriority');
    expect(log).toEqual([`nice 100 ${MEDIA_NICE}`, `nice 102 ${MEDIA_NICE}`]);
  });
});

describe('raiseToRealtime (the media worker thread only)', () => {
  const refused = (what: string) => async () => Promise.reject(new Error(what));
  const rows: { name: string; over: Partial<RealtimeDeps>; want: RealtimeResult; log: string[] }[] = [
    { name: 'allowed (root, CAP_SYS_NICE): SCHED_RR directly', over: {}, want: { method: 'sched_rr', priority: MEDIA_RT_PRIORITY }, log: [`rr 7 ${MEDIA_RT_PRIORITY}`] },
    {
      name: 'refused: RTKit MakeThreadRealtime',
      over: { schedRoundRobin: refused('chrt: failed to set pid 7\'s policy: Operation not permitted') },
      want: { method: 'rtkit', priority: MEDIA_RT_PRIORITY },
      log: [`rtkit-rt 7 ${MEDIA_RT_PRIORITY}`],
    },
    {
      name: 'refused and no RTKit: not real-time, with both reasons',
      over: { schedRoundRobin: refused('Operation not permitted'), rtkitRealtime: refused('The name org.freedesktop.RealtimeKit1 was not provided') },
      want: { method: 'none', reason: 'sched_setscheduler: Operation not permitted; RTKit: The name org.freedesktop.RealtimeKit1 was not provided' },
      log: [],
    },
    { name: 'not Linux: nothing tried', over: { platform: 'win32' }, want: { method: 'none', reason: 'not done on win32 yet' }, log: [] },
  ];
  for (const row of rows) {
    it(row.name, async () => {
      const log: string[] = [];
      const deps: RealtimeDeps = {
        schedRoundRobin: async (tid, p) => void log.push(`rr ${tid} ${p}`),
        rtkitRealtime: async (tid, p) => void log.push(`rtkit-rt ${tid} ${p}`),
        platform: 'linux',
        ...row.over,
      };
      expect(await raiseToRealtime(7, deps)).toEqual(row.want);
      expect(log).toEqual(row.log);
    });
  }
});

describe('the in-process sched_setscheduler (native/pulse addon schedRoundRobin)', () => {
  // What raiseToRealtime uses by default: util-linux's chrt forked the whole daemon first, 100–140 ms on the
  // media thread at each call's start. A thread of this process of its own (a worker) is the subject here.
  const policyOf = (tid: number) => Number(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ')[38]);
  it.runIf(process.platform === 'linux' && process.getuid?.() === 0)('makes a thread SCHED_RR (policy 2) and leaves the others alone', async () => {
    const worker = new Worker(`require('node:worker_threads').parentPort.postMessage(Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop())); setInterval(() => {}, 1000);`, { eval: true });
    try {
      const tid = await new Promise<number>((resolve) => worker.once('message', resolve));
      expect(policyOf(tid)).toBe(0);
      loadPulseAddon().schedRoundRobin(tid, MEDIA_RT_PRIORITY);
      expect(policyOf(tid)).toBe(2);
      expect(policyOf(process.pid)).toBe(0);
    } finally {
      await worker.terminate();
    }
  });
  it.runIf(process.platform === 'linux')('says why when the kernel refuses: no such thread, a priority out of range, not a number', () => {
    const addon = loadPulseAddon();
    expect(() => addon.schedRoundRobin(2 ** 30, MEDIA_RT_PRIORITY)).toThrow(/sched_setscheduler\(SCHED_RR 5\) for thread 1073741824: No such process/);
    expect(() => addon.schedRoundRobin(process.pid, 0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => (addon.schedRoundRobin as (a: unknown, b: unknown) => void)('me', 5)).toThrow(TypeError);
    expect(policyOf(process.pid)).toBe(0);
  });
});
