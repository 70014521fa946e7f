// Accuracy and loss curves as SVG, drawn by Vega-Lite (no hand-written
// drawing code). Several runs on one chart compare them.
import { writeFileSync } from 'node:fs';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

export interface CurveRun {
  label: string;
  rounds: readonly { round: number; accuracy: number; loss: number }[];
  target?: number;
}

function chart(runs: readonly CurveRun[], metric: 'accuracy' | 'loss', title: string): TopLevelSpec {
  const values = runs.flatMap((r) => r.rounds.map((x) => ({ run: r.label, round: x.round, value: x[metric] })));
  const line = {
    mark: { type: 'line' as const, point: true },
    encoding: {
      x: { field: 'round', type: 'quantitative' as const, title: 'round', axis: { tickMinStep: 1 } },
      y: {
        field: 'value',
        type: 'quantitative' as const,
        title: metric === 'accuracy' ? 'test accuracy' : 'test loss',
        scale: { zero: false },
        axis: metric === 'accuracy' ? { format: '.0%' } : {},
      },
      color: { field: 'run', type: 'nominal' as const, title: 'run' },
    },
  };
  const targets = runs.filter((r) => r.target !== undefined).map((r) => ({ run: r.label, target: r.target! }));
  const layers: object[] = [{ data: { values }, ...line }];
  if (metric === 'accuracy' && targets.length) {
    layers.push({
      data: { values: targets },
      mark: { type: 'rule', strokeDash: [4, 4] },
      encoding: { y: { field: 'target', type: 'quantitative' }, color: { field: 'run', type: 'nominal' } },
    });
  }
  return { title, width: 360, height: 240, layer: layers } as TopLevelSpec;
}

export async function curvesSvg(runs: readonly CurveRun[], title = 'test accuracy and loss per round'): Promise<string> {
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    hconcat: [chart(runs, 'accuracy', 'accuracy (dashed: target)'), chart(runs, 'loss', 'loss')],
    config: { background: 'white', font: 'sans-serif' },
  } as TopLevelSpec;
  return renderSvg(spec);
}

/** Any Vega-Lite spec as an SVG string, rendered headless. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

export async function writeCurves(path: string, runs: readonly CurveRun[], title?: string): Promise<void> {
  writeFileSync(path, await curvesSvg(runs, title));
}

/** The run's own curves, next to its summary.json. */
export async function writeRunPlot(
  summary: { experiment: { name: string; target?: { accuracy: number } }; rounds: CurveRun['rounds'] },
  runDir: string,
): Promise<string> {
  const path = `${runDir}/curves.svg`;
  await writeCurves(path, [{ label: summary.experiment.name, rounds: summary.rounds, target: summary.experiment.target?.accuracy }]);
  return path;
}
