// Per-round charts as SVG, drawn by Vega-Lite (no hand-written drawing code).
// Several runs on one chart compare them: one colour per run.
import { writeFileSync } from 'node:fs';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

/** The fields of a round record that hold a number, so a chart can only be asked to plot those. */
export type NumericField<R> = { [K in keyof R]-?: R[K] extends number | null ? K : never }[keyof R] & string;

export interface ChartRun<R extends { round: number }> {
  label: string;
  rounds: readonly R[];
  /** Drawn as a dashed rule on charts that ask for it (the experiment's target accuracy). */
  target?: number;
}

export interface RoundChart<R extends { round: number }> {
  title: string;
  yTitle: string;
  /** One line per run and measure; with several measures, each gets its own dash pattern. */
  measures: readonly { field: NumericField<R>; label: string }[];
  /** d3 number format of the y axis, e.g. '.0%' for accuracy, 'd' for counts. */
  yFormat?: string;
  /** Start the y axis at 0 (counts and times); accuracy and loss read better zoomed in. */
  yFromZero?: boolean;
  showTargets?: boolean;
}

export interface CurveRun {
  label: string;
  rounds: readonly { round: number; accuracy: number; loss: number }[];
  target?: number;
}

const BASE_CONFIG = { background: 'white', font: 'sans-serif' };

/** One chart of per-round values as a Vega-Lite layer spec; every chart in crowdfl is built here. */
export function roundChartSpec<R extends { round: number }>(runs: readonly ChartRun<R>[], chart: RoundChart<R>): TopLevelSpec {
  const values = runs.flatMap((run) =>
    run.rounds.flatMap((r) =>
      chart.measures.flatMap((m) => {
        const value = r[m.field] as number | null;
        // A round with no value (e.g. no evaluation) leaves a gap rather than a fake zero.
        return value === null ? [] : [{ run: run.label, measure: m.label, round: r.round, value }];
      }),
    ),
  );
  // Shared by every layer: layers whose colour scales differ in sort make Vega-Lite warn and re-sort.
  const runColour = { field: 'run', type: 'nominal', title: 'run', sort: runs.map((r) => r.label) };
  const lines = {
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'round', type: 'quantitative', title: 'round', axis: { tickMinStep: 1, format: 'd' } },
      y: {
        field: 'value',
        type: 'quantitative',
        title: chart.yTitle,
        scale: { zero: chart.yFromZero ?? false },
        // A count axis ('d') gets no ticks between whole numbers, which would repeat labels.
        axis: { ...(chart.yFormat ? { format: chart.yFormat } : {}), ...(chart.yFormat === 'd' ? { tickMinStep: 1 } : {}) },
      },
      color: runColour,
      ...(chart.measures.length > 1
        ? {
            strokeDash: {
              field: 'measure',
              type: 'nominal',
              title: '',
              sort: chart.measures.map((m) => m.label),
              // Drawn as a grey line: by default the legend inherits the point markers' fill and shows no dash at all.
              legend: { symbolType: 'stroke', symbolSize: 400, encode: { symbols: { update: { stroke: { value: 'gray' }, strokeWidth: { value: 2 } } } } },
            },
          }
        : {}),
    },
  };
  const targets = runs.filter((r) => r.target !== undefined).map((r) => ({ run: r.label, target: r.target }));
  const layers: object[] = [lines];
  if (chart.showTargets && targets.length) {
    layers.push({
      data: { values: targets },
      mark: { type: 'rule', strokeDash: [4, 4] },
      encoding: { y: { field: 'target', type: 'quantitative' }, color: runColour },
    });
  }
  return { title: chart.title, width: 360, height: 240, layer: layers } as TopLevelSpec;
}

export async function roundChartSvg<R extends { round: number }>(runs: readonly ChartRun<R>[], chart: RoundChart<R>): Promise<string> {
  return renderSvg({ ...roundChartSpec(runs, chart), config: BASE_CONFIG } as TopLevelSpec);
}

export const ACCURACY_CHART: RoundChart<{ round: number; accuracy: number | null }> = {
  title: 'accuracy (dashed: target)',
  yTitle: 'test accuracy',
  measures: [{ field: 'accuracy', label: 'accuracy' }],
  yFormat: '.0%',
  showTargets: true,
};

export const LOSS_CHART: RoundChart<{ round: number; loss: number | null }> = {
  title: 'loss',
  yTitle: 'test loss',
  measures: [{ field: 'loss', label: 'loss' }],
};

export async function curvesSvg(runs: readonly CurveRun[], title = 'test accuracy and loss per round'): Promise<string> {
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    hconcat: [roundChartSpec(runs, ACCURACY_CHART), roundChartSpec(runs, LOSS_CHART)],
    config: BASE_CONFIG,
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
