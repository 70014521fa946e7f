import { dense, flattenUnlessFlat } from './layers.js';
import type { ZooModel } from './zoo-model.js';

/** Multinomial logistic regression: softmax of one affine map. */
export const logreg: ZooModel<'logreg'> = {
  name: 'logreg',
  layers: ({ featureShape, numClasses }) => [...flattenUnlessFlat(featureShape), dense('logits', numClasses, 'linear')],
};
