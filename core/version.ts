import { createRequire } from 'node:module';

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

export function softwareVersions(): Record<string, string> {
  return {
    crowdfl: CROWDFL_VERSION,
    '@tensorflow/tfjs': versionOf('@tensorflow/tfjs'),
    '@tensorflow/tfjs-backend-wasm': versionOf('@tensorflow/tfjs-backend-wasm'),
    '@tensorflow/tfjs-node': versionOf('@tensorflow/tfjs-node'),
    '@grpc/grpc-js': versionOf('@grpc/grpc-js'),
    node: process.versions.node,
  };
}
