// What a zoo model is: a name and the layers it has for a given input. The
// registry of them is core/model/zoo.ts.
import type { LayerJson } from '../spec.js';

export interface ModelInput {
  readonly featureShape: readonly number[];
  readonly numClasses: number;
}

export interface ZooModel<Name extends string = string> {
  /** The experiment file's `model` value; the topology is named `crowdfl_<name>`. */
  readonly name: Name;
  /** Set for models that convolve images: an experiment must pair them with an image dataset (one with packaged images). */
  readonly needsImages?: true;
  /**
   * The layers for `input`, which core/model/zoo.ts modelSpec has already
   * checked (positive dimensions, at least 2 classes) and gives to the first
   * layer as its input shape. The last layer is a linear Dense layer with one
   * logit per class: the softmax lives in the loss (core/model/losses.ts).
   */
  layers(input: ModelInput): LayerJson[];
}
