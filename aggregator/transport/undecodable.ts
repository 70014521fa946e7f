// A request whose bytes are not its protobuf message is the caller's mistake
// and gets INVALID_ARGUMENT saying so. grpc-js answers a decoder that throws
// with INTERNAL, as if the aggregator had failed; so the aggregator's decoders
// never throw: an undecodable request reaches its handler as an Undecodable in
// place of the message, and is refused there.
import * as grpc from '@grpc/grpc-js';
import { invalid, type RpcError } from '../rpc-error.js';

/** What arrives in place of a request message whose bytes do not decode. */
export class Undecodable {
  constructor(
    readonly method: string,
    readonly reason: string,
  ) {}

  error(): RpcError {
    return invalid(
      `the ${this.method} request is not a protobuf message of crowdfl's protocol (${this.reason.slice(0, 200)}); ` +
        'send it with a crowdfl node of the same version as the aggregator',
    );
  }
}

export function isUndecodable(message: unknown): message is Undecodable {
  return message instanceof Undecodable;
}

/** `service` with request decoders that return an Undecodable instead of throwing. */
export function withTolerantDecoders(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const tolerant: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(service)) {
    tolerant[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return method.requestDeserialize(bytes);
        } catch (err) {
          return new Undecodable(name, err instanceof Error ? err.message : String(err));
        }
      },
    };
  }
  return tolerant;
}

/**
 * `handlers`, with the request of every unary and server-streaming method checked before its handler runs
 * (`refused` hears each one turned away). A client-streaming handler checks each message it reads itself:
 * it has an upload to abandon.
 */
export function refusingUndecodable(
  service: grpc.ServiceDefinition,
  handlers: grpc.UntypedServiceImplementation,
  refused?: (method: string, code: grpc.status) => void,
): grpc.UntypedServiceImplementation {
  const checked: grpc.UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(handlers)) {
    const method = service[name];
    if (!method || method.requestStream) {
      checked[name] = handler;
      continue;
    }
    const status = (request: Undecodable) => {
      const error = request.error();
      refused?.(name, error.code);
      return { code: error.code, details: error.message };
    };
    if (method.responseStream) {
      const serve = handler as grpc.handleServerStreamingCall<unknown, unknown>;
      checked[name] = ((call: grpc.ServerWritableStream<unknown, unknown>) => {
        if (isUndecodable(call.request)) call.emit('error', status(call.request));
        else serve(call);
      }) as grpc.handleServerStreamingCall<unknown, unknown>;
    } else {
      const serve = handler as grpc.handleUnaryCall<unknown, unknown>;
      checked[name] = ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        if (isUndecodable(call.request)) callback(status(call.request));
        else serve(call, callback);
      }) as grpc.handleUnaryCall<unknown, unknown>;
    }
  }
  return checked;
}
