import {
  JSONRPCClient,
  JSONRPCErrorException,
  JSONRPCServer,
  JSONRPCServerAndClient,
  createJSONRPCErrorResponse,
  type JSONRPCParams,
  type JSONRPCRequest,
} from 'json-rpc-2.0';
import type { z } from 'zod';
import { ErrorCode, ParleyError } from '../errors';

/**
 * One end of a JSON-RPC 2.0 conversation (JSON-RPC 2.0 spec) over any text
 * transport: the signaling WebSocket, the control socket, the dev bridge.
 *
 * Both ends may send requests and notifications. Every inbound request's
 * params are parsed with the zod schema registered for its method, so a
 * handler only ever sees typed, valid values; a bad message gets a JSON-RPC
 * error with a stable code (`common/errors`) and the transport stays open.
 * Errors that are not `ParleyError`s never leave this peer with their message
 * (it may hold internals): the other side sees `internal_error`.
 */
export class RpcPeer<Ctx = void> {
  private readonly rpc: JSONRPCServerAndClient<Ctx, void>;

  /**
   * @param send writes one text frame to the transport.
   * @param options.maxMessageBytes frames longer than this (UTF-16 length) are answered with `payload_too_large`.
   * @param options.requestTimeoutMs outbound requests fail with `unavailable` after this long.
   * @param options.onInternalError sees errors that were hidden from the other side (for the local log).
   * @param options.batches answer JSON-RPC 2.0 batch requests (§6: an array of requests answered by an
   *   array of responses, notifications left out); without it a batch is refused with `invalid_request`.
   */
  constructor(
    private readonly send: (text: string) => void,
    private readonly options: {
      maxMessageBytes: number;
      requestTimeoutMs?: number;
      onInternalError?: (method: string, error: unknown) => void;
      batches?: boolean;
    },
  ) {
    const server = new JSONRPCServer<Ctx>({ errorListener: () => {} });
    server.mapErrorToJSONRPCErrorResponse = (id, error: unknown) => {
      if (error instanceof ParleyError) {
        const e = error.toJsonRpc();
        return createJSONRPCErrorResponse(id, e.code, e.message, e.data);
      }
      if (error instanceof JSONRPCErrorException) {
        return createJSONRPCErrorResponse(id, error.code, error.message, error.data);
      }
      this.options.onInternalError?.('(handler)', error);
      return createJSONRPCErrorResponse(id, ErrorCode.INTERNAL_ERROR, 'internal error', {
        reason: 'internal_error',
      });
    };
    const client = new JSONRPCClient<void>((payload) => this.send(JSON.stringify(payload)));
    this.rpc = new JSONRPCServerAndClient(server, client, { errorListener: () => {} });
  }

  /**
   * Registers a method (or a notification: the same handler serves both; a
   * notification's return value is dropped).
   */
  handle<S extends z.ZodType, R>(
    method: string,
    schema: S,
    handler: (params: z.infer<S>, ctx: Ctx) => R | Promise<R>,
    /** Rewrites the ParleyErrors this method answers (validation's and the handler's), e.g. to add an API's error names. */
    mapError?: (error: ParleyError) => ParleyError,
  ): void {
    const run = async (raw: JSONRPCParams, ctx: Ctx) => {
      const parsed = schema.safeParse(raw ?? {});
      if (!parsed.success) {
        const first = parsed.error.issues[0];
        const detail = first ? `: ${first.path.length ? `${first.path.join('.')}: ` : ''}${first.message}` : '';
        throw new ParleyError('invalid_params', `invalid params for ${method}${detail}`, {
          issues: parsed.error.issues.slice(0, 10).map((i) => ({
            path: i.path.join('.'),
            message: i.message,
          })),
        });
      }
      return handler(parsed.data, ctx);
    };
    this.rpc.addMethod(method, async (raw: JSONRPCParams, ctx: Ctx) => {
      try {
        return await run(raw, ctx);
      } catch (e) {
        throw mapError && e instanceof ParleyError ? mapError(e) : e;
      }
    });
  }

  /**
   * Takes one inbound text frame. Malformed JSON, a frame that is not JSON-RPC
   * 2.0, or one over the size limit is answered with the matching error; this
   * never throws.
   */
  async receive(text: string, ctx: Ctx): Promise<void> {
    if (text.length > this.options.maxMessageBytes) {
      this.sendError(null, new ParleyError('payload_too_large', `message larger than ${this.options.maxMessageBytes} bytes`));
      return;
    }
    let payload: unknown;
    try {
      payload = JSON.parse(text);
    } catch {
      this.sendError(null, new ParleyError('parse_error', 'message is not valid JSON'));
      return;
    }
    if (Array.isArray(payload)) {
      if (!this.options.batches) {
        // Batches are valid JSON-RPC but the signaling protocol never needs them.
        this.sendError(null, new ParleyError('invalid_request', 'batch requests are not supported'));
        return;
      }
      await this.receiveBatch(payload, ctx);
      return;
    }
    try {
      await this.rpc.receiveAndSend(payload, ctx, undefined);
    } catch {
      const id = typeof payload === 'object' && payload && 'id' in payload ? (payload as { id: unknown }).id : null;
      this.sendError(
        typeof id === 'string' || typeof id === 'number' ? id : null,
        new ParleyError('invalid_request', 'message is not a JSON-RPC 2.0 request, notification or response'),
      );
    }
  }

  /**
   * Sends a request and waits for its result.
   * @throws ParleyError with the peer's code, or `unavailable` on timeout or when the transport closed.
   */
  async request<T = unknown>(method: string, params: object): Promise<T> {
    const requester = this.options.requestTimeoutMs
      ? this.rpc.client.timeout(this.options.requestTimeoutMs, (id) =>
          createJSONRPCErrorResponse(id, ErrorCode.UNAVAILABLE, `no answer to ${method} in time`, {
            reason: 'unavailable',
          }),
        )
      : this.rpc.client;
    try {
      return (await requester.request(method, params as JSONRPCParams)) as T;
    } catch (e) {
      if (e instanceof JSONRPCErrorException) {
        throw ParleyError.fromJsonRpc({ code: e.code, message: e.message, data: e.data });
      }
      throw new ParleyError('unavailable', e instanceof Error ? e.message : String(e));
    }
  }

  /**
   * Answers a message that could not be read at all (id null), e.g. a value
   * the transport refused as oversize before it ended.
   */
  refuse(error: ParleyError): void {
    this.sendError(null, error);
  }

  /** Sends a notification (no reply). */
  notify(method: string, params: object): void {
    this.rpc.notify(method, params as JSONRPCParams, undefined);
  }

  /** Fails every request still waiting for an answer (call when the transport closes). */
  close(message = 'connection closed'): void {
    this.rpc.rejectAllPendingRequests(message);
  }

  /**
   * A batch (JSON-RPC 2.0 §6): every member is answered in one array, in
   * order, notifications left out; an empty batch is one `invalid_request`;
   * nothing is sent when every member was a notification.
   */
  private async receiveBatch(batch: unknown[], ctx: Ctx): Promise<void> {
    if (batch.length === 0) {
      this.sendError(null, new ParleyError('invalid_request', 'an empty batch is not a request'));
      return;
    }
    const invalid = (id: unknown) => ({
      jsonrpc: '2.0',
      id: typeof id === 'string' || typeof id === 'number' ? id : null,
      error: new ParleyError('invalid_request', 'batch member is not a JSON-RPC 2.0 request').toJsonRpc(),
    });
    const answers = await Promise.all(
      batch.map(async (m) => {
        if (typeof m !== 'object' || m === null || Array.isArray(m) || (m as { jsonrpc?: unknown }).jsonrpc !== '2.0' || typeof (m as { method?: unknown }).method !== 'string') {
          return invalid(typeof m === 'object' && m && 'id' in m ? (m as { id: unknown }).id : null);
        }
        try {
          return await this.rpc.server.receive(m as JSONRPCRequest, ctx);
        } catch {
          return invalid((m as { id?: unknown }).id);
        }
      }),
    );
    const out = answers.filter((a) => a !== null);
    if (out.length > 0) this.send(JSON.stringify(out));
  }

  private sendError(id: string | number | null, error: ParleyError): void {
    const e = error.toJsonRpc();
    this.send(JSON.stringify({ jsonrpc: '2.0', id, error: e }));
  }
}
