/**
 * benny's chart page made to work offline and to plot what the table prints. benny's template
 * loads Chart.js from a CDN (a blank page without network) and plots ops/s, which here is
 * replays/s; it has no option for either. So the written page is edited: the script tag
 * becomes the installed Chart.js itself, and the bars, tooltip and axis become lookups/s
 * (replays/s x lookups per replay, as BenchRow.lookupsPerSec). benny's page shows one suite
 * (run.ts saves the last round that ran in table order); given the replays/s the table
 * reports per strategy (the mean of the rounds), the bars show those instead.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

// What benny 3.7's chart.html template (lib/internal/prepareFileContent.js) writes; a test
// checks it, and an edit that no longer matches throws rather than write a half-edited page.
type Edit = (page: { lookups: number; labels: string[]; replaysPerSec?: ReadonlyMap<string, number> }, match: string, ...groups: string[]) => string;
const EDITS: Array<[RegExp, Edit]> = [
  [/<script src="https:\/\/cdn\.jsdelivr\.net\/npm\/chart\.js@[^"]*"><\/script>/, () => `<script>${chartJs()}</script>`],
  [/\bdata: (\[[^\]]*\])/, ({ lookups, labels, replaysPerSec }, _, values) => {
    const ops = (JSON.parse(values) as number[]).map((v, i) => replaysPerSec?.get(labels[i]) ?? v);
    return `data: ${JSON.stringify(ops.map((v) => v * lookups))}`;
  }],
  [/' ops\/s'/, () => `' lookups/s'`],
  [/text: 'Operations per second'/, ({ lookups }) => `text: 'Lookups per second (whole replays of ${lookups} lookups)'`],
];
const LABELS = /\blabels: (\[[^\]]*\])/;

/** The installed Chart.js UMD build (benny's template asks for 3.x), safe inside a script element. */
function chartJs(): string {
  const file = createRequire(import.meta.url).resolve('chart.js/dist/chart.min.js');
  return readFileSync(file, 'utf8').replace(/<\/script/gi, '<\\/script');
}

/**
 * Rewrites benny's chart `file` in place; `lookups`: lookups in one replay of the trace;
 * `replaysPerSec`: the figure to plot per strategy (benny's label) instead of the page's own.
 */
export function makeChartSelfContained(file: string, lookups: number, replaysPerSec?: ReadonlyMap<string, number>): void {
  let html = readFileSync(file, 'utf8');
  const labels = LABELS.exec(html);
  if (labels === null) throw new Error(`${file}: benny's chart page no longer has ${LABELS.source}; src/replay/chart.ts needs updating`);
  const page = { lookups, labels: JSON.parse(labels[1]) as string[], replaysPerSec };
  for (const [pattern, replace] of EDITS) {
    if (!pattern.test(html)) throw new Error(`${file}: benny's chart page no longer has ${pattern.source}; src/replay/chart.ts needs updating`);
    // (a function replacement: Chart.js's text holds `$` sequences a string replacement would expand)
    html = html.replace(pattern, (match, ...groups: string[]) => replace(page, match, ...groups));
  }
  writeFileSync(file, html);
}
