// Clients a tool like grpcurl or a Kubernetes probe would use: the standard health service
// (grpc.health.v1) and server reflection (grpc.reflection.v1), built from their published protos,
// not from crowdfl's.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const require = createRequire(import.meta.url);
const HEALTH_PROTO = join(dirname(require.resolve('grpc-health-check/package.json')), 'proto', 'health', 'v1', 'health.proto');
const REFLECTION_PROTO = join(dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto', 'grpc', 'reflection', 'v1', 'reflection.proto');

type Ctor = new (address: string, credentials: grpc.ChannelCredentials) => grpc.Client;
function serviceClient(protoPath: string, path: string[]): Ctor {
  let node: unknown = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath, { keepCase: true, enums: String, defaults: true }));
  for (const part of path) node = (node as Record<string, unknown>)[part];
  return node as Ctor;
}

export interface HealthClient {
  check(service: string): Promise<string>;
  /** Every status the server sends for `service`, as it sends it; `until` resolves when one equals `status`. */
  watch(service: string): { statuses: string[]; until(status: string): Promise<void>; cancel(): void };
  /** Reflection's list of services. */
  listServices(): Promise<string[]>;
  /** Reflection's file descriptors (serialized) of the file that declares `symbol`. */
  fileContaining(symbol: string): Promise<Buffer[]>;
  close(): void;
}

export function healthClient(address: string): HealthClient {
  const Health = serviceClient(HEALTH_PROTO, ['grpc', 'health', 'v1', 'Health']);
  const Reflection = serviceClient(REFLECTION_PROTO, ['grpc', 'reflection', 'v1', 'ServerReflection']);
  const health = new Health(address, grpc.credentials.createInsecure()) as grpc.Client & Record<string, Function>;
  const reflection = new Reflection(address, grpc.credentials.createInsecure()) as grpc.Client & Record<string, Function>;
  const reflect = (request: object) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const call = reflection.ServerReflectionInfo() as grpc.ClientDuplexStream<object, Record<string, unknown>>;
      call.once('data', (reply) => {
        resolve(reply);
        call.end();
      });
      call.once('error', reject);
      call.write(request);
    });
  return {
    check: (service) =>
      new Promise((resolve, reject) =>
        health.Check({ service }, (err: grpc.ServiceError | null, reply: { status: string }) => (err ? reject(err) : resolve(reply.status))),
      ),
    watch: (service) => {
      const statuses: string[] = [];
      const waiting: { status: string; resolve: () => void }[] = [];
      const call = health.Watch({ service }) as grpc.ClientReadableStream<{ status: string }>;
      call.on('data', (reply) => {
        statuses.push(reply.status);
        for (const w of waiting.filter((w) => w.status === reply.status)) w.resolve();
      });
      call.on('error', () => undefined);
      return {
        statuses,
        until: (status) => (statuses.includes(status) ? Promise.resolve() : new Promise<void>((resolve) => waiting.push({ status, resolve }))),
        cancel: () => call.cancel(),
      };
    },
    listServices: async () => {
      const reply = await reflect({ list_services: '' });
      const list = reply.list_services_response as { service: { name: string }[] } | undefined;
      return (list?.service ?? []).map((s) => s.name);
    },
    fileContaining: async (symbol) => {
      const reply = await reflect({ file_containing_symbol: symbol });
      const files = reply.file_descriptor_response as { file_descriptor_proto: Buffer[] } | undefined;
      if (!files) throw new Error(`no file descriptor for ${symbol}: ${JSON.stringify(reply.error_response ?? reply)}`);
      return files.file_descriptor_proto;
    },
    close: () => {
      health.close();
      reflection.close();
    },
  };
}
