// The `dataset` section of an experiment file: which dataset, and how it is
// split among nodes. One object schema per registered dataset (registry.ts).
import { z } from 'zod';
import { datasets } from './registry.js';

export { partitionSchema, type PartitionSpec } from './partition-spec.js';

type SchemasOf<Descriptors extends readonly { readonly schema: unknown }[]> = { readonly [K in keyof Descriptors]: Descriptors[K]['schema'] };

/** The descriptors' schemas as a tuple in registry order, typed element by element as z.discriminatedUnion needs. */
function schemasOf<const Descriptors extends readonly { readonly schema: unknown }[]>(descriptors: Descriptors): SchemasOf<Descriptors> {
  // map keeps length and order; TypeScript types its result as an array, not the tuple it is.
  return descriptors.map((descriptor) => descriptor.schema) as unknown as SchemasOf<Descriptors>;
}

export const datasetSchema = z.discriminatedUnion('name', schemasOf(datasets));
export type DatasetSpec = z.infer<typeof datasetSchema>;
export type DatasetName = DatasetSpec['name'];
