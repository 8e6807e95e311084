import { html } from 'htm/preact';
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface Series {
  label: string;
  values: number[];
  bars?: boolean;
}

/**
 * A uPlot chart that fills its container's width. The canvas is decoration for sighted readers:
 * the same numbers are in the table the page shows beside it, and `summary` labels the figure.
 */
export function Chart({ x, series, summary, unit }: { x: number[]; series: Series; summary: string; unit: string }) {
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
        cursor: { show: true, drag: { x: false, y: false } },
        scales: { x: { time: true } },
        axes: [{ stroke: '#333' }, { stroke: '#333', label: unit, size: 60 }],
        series: [
          {},
          {
            label: series.label,
            stroke: '#1f5fa8',
            fill: 'rgba(31,95,168,0.25)',
            width: 2,
            ...(series.bars && { paths: uPlot.paths.bars!({ size: [0.6, 40] }), points: { show: false } }),
          },
        ],
      },
      [x, series.values],
      el,
    );
    const ro = new ResizeObserver(() => plot.setSize({ width: width(), height: 220 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.destroy();
    };
  }, [x.join(','), series.values.join(',')]);
  return html`<figure class="chart"><div ref=${box} role="img" aria-label=${summary}></div><figcaption>${series.label}</figcaption></figure>`;
}
