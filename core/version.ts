import { createRequire } from 'node:module';
import { backendVersions } from './backend.js';

const require = createRequire(import.meta.url);

function versionOf(pkg: string): string {
  try {
    return (require(`${pkg}/package.json`) as { version: string }).version;
  } catch {
    return 'absent';
  }
}

// dist/core/version.js → the package root's package.json
export const CROWDFL_VERSION = (require('../../package.json') as { version: string }).version;

export const SOFTWARE = `crowdfl/${CROWDFL_VERSION} tfjs/${versionOf('@tensorflow/tfjs')} node/${process.versions.node}`;

/** What a run record states about the software: crowdfl, gRPC, Node, and the tfjs packages this process loaded. */
export function softwareVersions(): Record<string, string> {
  return {
    crowdfl: CROWDFL_VERSION,
    '@grpc/grpc-js': versionOf('@grpc/grpc-js'),
    node: process.versions.node,
    ...backendVersions(),
  };
}
