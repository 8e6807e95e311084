import { html } from 'htm/preact';
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface Series {
  label: string;
  values: number[];
  bars?: boolean;
  /** The colour, one of the stylesheet's: the caption's key for it uses the same. */
  tone?: keyof typeof TONES;
}

/** The stylesheet's --accent and --danger, as stroke and fill (uPlot draws on a canvas, not CSS). */
const TONES = {
  accent: ['#1f5fa8', 'rgba(31,95,168,0.25)'],
  danger: ['#a61b1b', 'rgba(166,27,27,0.25)'],
} as const;

/**
 * A uPlot chart of one or more series over time that fills its container's width. The canvas
 * is decoration for sighted readers: the same numbers are in the table the page shows beside
 * it, and `summary` labels the figure.
 */
export function Chart({ x, series, summary, unit }: { x: number[]; series: Series[]; summary: string; unit: string }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const width = () => Math.max(240, el.clientWidth);
    const plot = new uPlot(
      {
        width: width(),
        height: 220,
        legend: { show: false },
        // The buckets are UTC hours and days, as the tables beside the charts say: the axis
        // labels them in UTC, not in the browser's time zone.
        tzDate: (ts: number) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
        cursor: { show: true, drag: { x: false, y: false } },
        // Bars are centred on their time: half a step of room at each end keeps the first and
        // last whole.
        scales: { x: { time: true, ...(series.some((s) => s.bars) && x.length > 1 && { range: (_u: uPlot, min: number, max: number): uPlot.Range.MinMax => [min - (x[1]! - x[0]!) / 2, max + (x[1]! - x[0]!) / 2] }) } },
        axes: [{ stroke: '#333' }, { stroke: '#333', label: unit, size: 60 }],
        series: [
          {},
          ...series.map((s) => ({
            label: s.label,
            stroke: TONES[s.tone ?? 'accent'][0],
            fill: TONES[s.tone ?? 'accent'][1],
            width: 2,
            ...(s.bars && { paths: uPlot.paths.bars!({ size: [0.6, 40] }), points: { show: false } }),
          })),
        ],
      },
      [x, ...series.map((s) => s.values)],
      el,
    );
    const ro = new ResizeObserver(() => plot.setSize({ width: width(), height: 220 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.destroy();
    };
  }, [x.join(','), series.map((s) => s.values.join(',')).join(';')]);
  return html`<figure class="chart"><div ref=${box} role="img" aria-label=${summary}></div>
    <figcaption>${series.map((s, i) => html`${i > 0 && ' · '}<span class=${`key tone-${s.tone ?? 'accent'}`}>${s.label}</span>`)}</figcaption></figure>`;
}
