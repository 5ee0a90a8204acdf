/** What every view of a signed-in page gets. */
import type { ApiClient, Me } from './client.js';
import type { LiveSocket } from './live.js';

export interface PageContext {
  readonly api: ApiClient;
  readonly live: LiveSocket;
  readonly me: Me;
  /** The enterprise shown. */
  readonly enterpriseId: string;
  /** Query/body fields naming it: empty for an enterprise's own accounts, `enterprise_id` for a carrier operator. */
  readonly scope: { enterprise_id?: string };
}
