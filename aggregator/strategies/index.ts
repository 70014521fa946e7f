import type { Experiment } from '../../core/experiment.js';
import { FedAvg } from './fedavg.js';
import type { Strategy } from './strategy.js';

export function strategyFor(experiment: Experiment): Strategy {
  switch (experiment.strategy.name) {
    case 'fedavg':
      return new FedAvg(experiment.training);
  }
}
