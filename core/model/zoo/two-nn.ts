import { dense, flattenUnlessFlat } from './layers.js';
import type { ZooModel } from './zoo-model.js';

/** McMahan et al. 2017, "2NN": two hidden layers of 200 ReLU units. */
export const twoNN: ZooModel<'2nn'> = {
  name: '2nn',
  layers: ({ featureShape, numClasses }) => [
    ...flattenUnlessFlat(featureShape),
    dense('hidden1', 200, 'relu'),
    dense('hidden2', 200, 'relu'),
    dense('logits', numClasses, 'linear'),
  ],
};
