/** The median of xs (mean of the middle two for an even count); NaN for none. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The arithmetic mean of xs; NaN for none. */
export function mean(xs: readonly number[]): number {
  return xs.reduce((x, y) => x + y, 0) / xs.length;
}
