// Loads proto/crowdfl.proto at run time. The TypeScript types come from the
// same file (proto/generated, written by `npm run proto:gen`), so the wire
// format is declared exactly once.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType } from '../proto/generated/crowdfl.js';

export const PROTOCOL_VERSION = 4;

export const PROTO_PATH = fileURLToPath(new URL('../../proto/crowdfl.proto', import.meta.url));

// Must match the flags of `npm run proto:gen`, or the generated types lie.
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

let cached: ProtoGrpcType | undefined;
let cachedDefinition: protoLoader.PackageDefinition | undefined;

/** The parsed proto/crowdfl.proto (server reflection serves its descriptors). */
export function loadProtoDefinition(): protoLoader.PackageDefinition {
  cachedDefinition ??= protoLoader.loadSync(PROTO_PATH, LOADER_OPTIONS);
  return cachedDefinition;
}

export function loadProto(): ProtoGrpcType {
  cached ??= grpc.loadPackageDefinition(loadProtoDefinition()) as unknown as ProtoGrpcType;
  return cached;
}

