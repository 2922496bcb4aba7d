import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import type { z } from 'zod';
import { ParleyError, type ErrorReason } from '../common/errors';
import { LoginBody, RegisterBody } from '../common/protocol/signaling';
import type { Accounts } from './accounts';
import type { FrontDoor } from './front-door';
import type { RelayService } from './relays';

/** HTTP status for each error reason an HTTP route can answer with. */
const STATUS: Partial<Record<ErrorReason, number>> = {
  parse_error: 400,
  invalid_request: 400,
  invalid_params: 400,
  unauthenticated: 401,
  bad_credentials: 401,
  forbidden: 403,
  method_not_found: 404,
  already_exists: 409,
  payload_too_large: 413,
  rate_limited: 429,
  unavailable: 503,
  internal_error: 500,
};

/** Sends `{error:{code,message,data:{reason,…}}}` (common/protocol HttpError) with the matching status. */
function sendErrorReply(reply: FastifyReply, e: ParleyError): FastifyReply {
  if (e.data.retryAfter !== undefined)
    reply.header('retry-after', String(Math.ceil(e.data.retryAfter)));
  return reply.status(STATUS[e.reason] ?? 400).send({ error: e.toJsonRpc() });
}

/** The device token of an `Authorization: Bearer <token>` header, or undefined. */
function bearerToken(header: string | undefined): string | undefined {
  const m = /^Bearer ([A-Za-z0-9_-]{1,512})$/i.exec(header ?? '');
  return m?.[1];
}

function parseBody<S extends z.ZodType>(schema: S, body: unknown, what: string): z.infer<S> {
  const parsed = schema.safeParse(body ?? {});
  if (!parsed.success) {
    throw new ParleyError('invalid_params', `invalid ${what}`, {
      issues: parsed.error.issues
        .slice(0, 10)
        .map((i) => ({ path: i.path.join('.'), message: i.message })),
    });
  }
  return parsed.data;
}

/**
 * Registers the HTTP API on `app`:
 * - `GET /healthz` → 200 `{ok:true, version}`
 * - `POST /v1/accounts` RegisterBody → 201 RegisterReply; 409 `already_exists`; 400 `invalid_params`
 * - `POST /v1/sessions` LoginBody → 201 LoginReply (a new device and its token); 401 `bad_credentials`
 * - both behind `frontDoor` (server/front-door.ts): 429 `rate_limited` with `Retry-After` (seconds)
 *   when a login or registration limit refuses; 503 `unavailable` with `Retry-After` when the
 *   password-hash cap and its queue are full
 * - `GET /v1/calling/relays` with `Authorization: Bearer <device token>` → 200 RelayAnswer
 *   (`username, password, ttl, urls, urlsWithIps, hostname, expiresAt`); 401 `CALL_RELAY_UNAUTHORIZED`,
 *   429 `CALL_RELAY_RATE_LIMITED` (with `Retry-After`), 500 `CALL_RELAY_PROVIDER_ERROR`,
 *   503 `CALL_RELAY_NOT_CONFIGURED` (the name is in `error.data.name`)
 * Every error, including unknown routes and unparsable bodies, has the HttpError shape.
 * @param onError sees the reason of each error reply (metrics); must not throw.
 */
export function registerHttpRoutes(
  app: FastifyInstance,
  accounts: Accounts,
  relays: RelayService,
  frontDoor: FrontDoor,
  version: string,
  onError: (reason: ErrorReason) => void = () => {},
): void {
  const sendError = (reply: FastifyReply, e: ParleyError): FastifyReply => {
    onError(e.reason);
    return sendErrorReply(reply, e);
  };
  app.setErrorHandler((err: FastifyError | ParleyError, req, reply) => {
    if (err instanceof ParleyError) return sendError(reply, err);
    const status = (err as FastifyError).statusCode ?? 500;
    if (status === 413)
      return sendError(reply, new ParleyError('payload_too_large', 'request body too large'));
    if (status === 415)
      return sendError(
        reply,
        new ParleyError('invalid_request', 'send a JSON body (content-type: application/json)'),
      );
    if (status >= 400 && status < 500) {
      const reason =
        (err as FastifyError).code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err instanceof SyntaxError
          ? 'parse_error'
          : 'invalid_request';
      return sendError(
        reply,
        new ParleyError(
          reason,
          reason === 'parse_error' ? 'request body is not valid JSON' : 'bad request',
        ),
      );
    }
    req.log.error({ err }, 'http handler failed');
    return sendError(reply, new ParleyError('internal_error', 'internal error'));
  });
  app.setNotFoundHandler((req, reply) =>
    sendError(
      reply,
      new ParleyError('method_not_found', `no route ${req.method} ${req.url.split('?')[0]}`),
    ),
  );

  app.get('/healthz', async () => ({ ok: true, version }));

  app.post('/v1/accounts', async (req, reply) => {
    const body = parseBody(RegisterBody, req.body, 'registration');
    const account = await frontDoor.register(req.ip, body.username, () =>
      accounts.register(body.username, body.password),
    );
    req.log.info({ accountId: account.accountId }, 'account registered');
    return reply.status(201).send(account);
  });

  app.get('/v1/calling/relays', async (req, reply) => {
    const token = bearerToken(req.headers.authorization);
    const device = token
      ? await accounts.authenticateToken(token).catch(() => undefined)
      : undefined;
    if (!device) {
      throw new ParleyError(
        'unauthenticated',
        'sign in first: send "Authorization: Bearer <device token>"',
        { name: 'CALL_RELAY_UNAUTHORIZED' },
      );
    }
    const answer = await relays.issue(device, req.ip);
    // Credentials must never be cached by a proxy.
    return reply.header('cache-control', 'no-store').send(answer);
  });

  app.post('/v1/sessions', async (req, reply) => {
    const body = parseBody(LoginBody, req.body, 'login');
    const session = await frontDoor.login(req.ip, body.username, () =>
      accounts.login(body.username, body.password, body.deviceName, req.ip),
    );
    req.log.info({ accountId: session.accountId, deviceId: session.deviceId }, 'device logged in');
    return reply.status(201).send(session);
  });
}
