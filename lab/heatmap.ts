// A labelled heat map (rows × columns → value) as SVG, drawn by Vega-Lite.
import type { TopLevelSpec } from 'vega-lite';
import { renderSvg } from './plot.js';

export interface HeatCell {
  row: string;
  column: string;
  /** A fraction in [0, 1], shown as a percentage; null for a run that produced nothing. */
  value: number | null;
}

export async function heatmapSvg(
  cells: readonly HeatCell[],
  o: { rows: readonly string[]; columns: readonly string[]; title: string },
): Promise<string> {
  const values = cells.map((c) => ({ ...c, label: c.value === null ? '—' : (c.value * 100).toFixed(1) }));
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: o.title,
    data: { values },
    width: 60 * o.columns.length,
    height: 28 * o.rows.length,
    encoding: {
      x: { field: 'column', type: 'nominal', sort: o.columns, title: 'attack', axis: { labelAngle: -30 } },
      y: { field: 'row', type: 'nominal', sort: o.rows, title: 'aggregation' },
    },
    layer: [
      {
        mark: 'rect',
        encoding: {
          color: { field: 'value', type: 'quantitative', title: 'accuracy', scale: { scheme: 'redyellowgreen', domain: [0, 1] }, legend: { format: '.0%' } },
        },
      },
      { mark: { type: 'text', fontSize: 11 }, encoding: { text: { field: 'label', type: 'nominal' } } },
    ],
    config: { background: 'white', font: 'sans-serif' },
  } as TopLevelSpec;
  return renderSvg(spec);
}
