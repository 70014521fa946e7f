import { conv2d, dense, flatten, maxPool, reshape } from './layers.js';
import type { ZooModel } from './zoo-model.js';

/** The CNN convolves H×W×C images; plain H×W or square flat inputs get a channel axis. */
function imageShape(featureShape: readonly number[]): [number, number, number] {
  if (featureShape.length === 3) return [featureShape[0], featureShape[1], featureShape[2]];
  if (featureShape.length === 2) return [featureShape[0], featureShape[1], 1];
  if (featureShape.length === 1) {
    const side = Math.round(Math.sqrt(featureShape[0]));
    if (side * side === featureShape[0]) return [side, side, 1];
  }
  throw new RangeError(
    `model cnn needs image inputs (H×W, H×W×C, or a square number of features), got feature shape [${featureShape.join(', ')}]`,
  );
}

/** McMahan et al. 2017, the FedAvg CNN. */
export const cnn: ZooModel<'cnn'> = {
  name: 'cnn',
  needsImages: true,
  layers: ({ featureShape, numClasses }) => {
    const image = imageShape(featureShape);
    const needsReshape = featureShape.length !== 3;
    return [
      ...(needsReshape ? [reshape('to_image', image)] : []),
      conv2d('conv1', 32, 5, 'relu'),
      maxPool('pool1', 2),
      conv2d('conv2', 64, 5, 'relu'),
      maxPool('pool2', 2),
      flatten('flatten'),
      dense('fc1', 512, 'relu'),
      dense('logits', numClasses, 'linear'),
    ];
  },
};
