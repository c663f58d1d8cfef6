/**
 * benny's chart page made to work offline and to say what it plots: benny's template loads
 * Chart.js from a CDN (a blank page without network) and labels bars "ops/s"; here the script
 * tag is replaced by the installed Chart.js itself and the unit named (one op = one replay of
 * the trace, `lookups` lookups).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const CDN_SCRIPT = /<script src="https:\/\/cdn\.jsdelivr\.net\/npm\/chart\.js@[^"]*"><\/script>/;

export function makeChartSelfContained(file: string, lookups: number): void {
  const html = readFileSync(file, 'utf8');
  if (!CDN_SCRIPT.test(html)) throw new Error(`${file}: benny's chart no longer loads Chart.js the way this code expects`);
  const library = readFileSync(createRequire(import.meta.url).resolve('chart.js/dist/chart.min.js'), 'utf8');
  // (a function replacement: the library's text holds `$` sequences a string replacement would expand)
  const out = html
    .replace(CDN_SCRIPT, () => `<script>${library.replace(/<\/script/gi, '<\\/script')}</script>`)
    .replace(/' ops\/s'/g, () => `' replays/s (${lookups} lookups each)'`);
  writeFileSync(file, out);
}
