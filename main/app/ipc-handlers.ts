/**
 * The IPC contract's request handlers over the Softphone, shared by Electron's
 * `ipcMain` wiring (main/app/ipc.ts) and the development bridge
 * (main/app/dev-bridge.ts). No Electron here: this file is what both carry.
 */
import type { z } from 'zod';
import { ParleyError } from '../../common/errors';
import { IpcRequests, type IpcError, type IpcRequestName, type IpcResult } from '../../common/ipc/contract';
import type { Softphone } from '../core/softphone';

type Handlers = {
  [M in IpcRequestName]: (params: z.output<(typeof IpcRequests)[M]['params']>) => Promise<IpcResult<M>> | IpcResult<M>;
};

const ok = { ok: true as const };

/** One handler per request of the contract (the type makes a missing one a compile error). */
export function createHandlers(phone: Softphone): Handlers {
  return {
    'session.get': () => phone.sessionInfo(),
    'session.register': (p) => phone.register(p.serverUrl, p.username, p.password),
    'session.signIn': (p) => phone.signIn(p.serverUrl, p.username, p.password),
    'session.signOut': () => phone.signOut(),

    'contacts.list': () => ({ contacts: phone.contacts() }),
    'contacts.add': async (p) => (await phone.addContact(p.username), ok),
    'contacts.accept': async (p) => (await phone.acceptContact(p.username), ok),
    'contacts.remove': async (p) => (await phone.removeContact(p.username), ok),
    'contacts.block': async (p) => (await phone.blockContact(p.username, p.blocked), ok),
    'contacts.silence': async (p) => (await phone.silenceContact(p.username, p.silenced), ok),

    'call.start': async (p) => ({ callId: await phone.startCall(p.to) }),
    'call.answer': async (p) => ({ callId: await phone.answer(p.callId) }),
    'call.decline': async (p) => ({ callId: await phone.decline(p.callId) }),
    'call.hangup': async (p) => ({ callId: await phone.hangup(p.callId) }),
    'call.hold': (p) => ({ callId: phone.hold(p.callId, p.held) }),
    'call.list': () => ({ calls: phone.calls() }),

    'mic.get': () => phone.micState(),
    'mic.setMuted': (p) => phone.setMuted(p.muted),
    'mic.pushToTalk': (p) => phone.pushToTalk(p.pressed),

    'room.create': (p) => phone.createRoom(p.invite),
    'room.join': (p) => phone.joinRoom(p.roomId),
    'room.decline': async (p) => (await phone.declineRoom(p.roomId), ok),
    'room.leave': async () => ({ roomId: await phone.leaveRoom() }),
    'room.invite': (p) => phone.inviteToRoom(p.usernames),
    'room.get': () => phone.roomInfo(),

    'history.list': (p) => ({ entries: phone.history(p.limit) }),
    'history.clear': async () => (await phone.clearHistory(), ok),

    'settings.get': () => phone.settings(),
    'settings.set': (p) => phone.updateSettings(p),

    'trust.safetyNumber': (p) => phone.safetyNumber(p.username),
    'trust.get': (p) => phone.trustInfo(p.username),
    'trust.verify': (p) => phone.verifyContact(p.username),
    'trust.acceptKeyChange': (p) => phone.acceptKeyChange(p.username),
    'account.devices': () => phone.accountDevices(),
    'account.startLink': () => phone.startDeviceLink(),
    'account.link': (p) => phone.linkDevice(p.code),
    'account.resetAccountKey': () => phone.resetAccountKey(),

    'devices.list': () => phone.devices(),
    'devices.testTone': async (p) => (await phone.testTone(p.target), ok),
    'devices.testMic': async (p) => (await phone.testMic(p.on), ok),
  };
}

/** Turns anything thrown into the shape that crosses the IPC boundary (never a stack trace). */
export function toIpcError(e: unknown): IpcError {
  if (e instanceof ParleyError) return { code: e.code, reason: e.reason, message: e.message };
  const internal = new ParleyError('internal_error', 'something went wrong inside Parley; see the log');
  return { code: internal.code, reason: internal.reason, message: internal.message };
}

/**
 * Validates a request's params against the contract and runs its handler.
 * @throws ParleyError `method_not_found` for a name outside the contract,
 *   `invalid_params` (message naming the field) for params that do not match.
 */
export async function dispatch(handlers: Handlers, method: string, params: unknown): Promise<unknown> {
  if (!Object.hasOwn(IpcRequests, method)) throw new ParleyError('method_not_found', `unknown request "${method}"`);
  const m = method as IpcRequestName;
  const parsed = IpcRequests[m].params.safeParse(params ?? undefined);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? `${issue.path.join('.')}: ` : '';
    throw new ParleyError('invalid_params', `${where}${issue?.message ?? 'invalid parameters'}`);
  }
  const handler = handlers[m] as (p: unknown) => unknown;
  return await handler(parsed.data);
}
