/**
 * The evaluator's view of one event: what the pipeline knows after enrichment (or what a
 * policy author writes in an EVENTS.jsonl line). Strings are as the catalog names them.
 */
export interface EvalEvent {
  role_ids: readonly string[];
  /** The app's name, or its id when no name is known (see `appKey`). */
  app: string | undefined;
  app_category?: string | undefined;
  /** The action's name, or its id. */
  action: string | undefined;
  tower_id?: string | undefined;
  region?: string | undefined;
  os?: string | undefined;
  os_version?: string | undefined;
  /** Milliseconds since the epoch; time-window conditions need it. */
  ts?: number | undefined;
  bytes_up?: number | undefined;
  bytes_down?: number | undefined;
}
