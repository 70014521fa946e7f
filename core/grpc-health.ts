// The standard gRPC health service (grpc.health.v1.Health: Check and Watch) and server reflection
// (grpc.reflection v1 and v1alpha) on a gRPC server, so grpcurl, Kubernetes gRPC probes and load
// balancers work against the aggregator and the serving port without knowing crowdfl's protos.
//
// Health answers for the empty name (the server as a whole) and for each service the server
// implements; any other name is NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch), as the standard says.
import type * as grpc from '@grpc/grpc-js';
import { loadSync, type PackageDefinition } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as HEALTH_PROTO, type ServingStatus } from 'grpc-health-check';

export type { ServingStatus };

/** The health service's own name, for clients and for reflection's list. */
export const HEALTH_SERVICE = 'grpc.health.v1.Health';

export class ServerHealth {
  private readonly health: HealthImplementation;
  private current: ServingStatus;

  /** `services`: the fully qualified names the server implements (e.g. 'crowdfl.v1.Aggregator'). */
  constructor(
    readonly services: readonly string[],
    initial: ServingStatus,
  ) {
    this.current = initial;
    this.health = new HealthImplementation(Object.fromEntries(['', ...services].map((s) => [s, initial])));
  }

  /** Adds Health and reflection (over `definition`, the protos the server's own services come from) to `server`. */
  addTo(server: grpc.Server, definition: PackageDefinition): void {
    this.health.addToServer(server as unknown as Parameters<HealthImplementation['addToServer']>[0]);
    // Reflection lists the health service too, so a client finds it without its proto.
    const withHealth = { ...definition, ...loadSync(HEALTH_PROTO) };
    new ReflectionService(withHealth as unknown as ConstructorParameters<typeof ReflectionService>[0]).addToServer(server);
  }

  /** Sets every service's status (Watch streams see the change). */
  set(status: ServingStatus): void {
    if (status === this.current) return;
    this.current = status;
    for (const s of ['', ...this.services]) this.health.setStatus(s, status);
  }

  get status(): ServingStatus {
    return this.current;
  }
}
