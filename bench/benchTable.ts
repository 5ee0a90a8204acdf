/** Formats benchmark rows for console.table: big numbers with thousands separators. */
export function benchReportTable(rows: ReadonlyArray<object>): Array<Record<string, string | number | null>> {
  return rows.map((row) =>
    Object.fromEntries(
      Object.entries(row).map(([k, v]) => [
        k,
        typeof v === 'number' && Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en-US') : (v as string | number | null),
      ]),
    ),
  );
}
