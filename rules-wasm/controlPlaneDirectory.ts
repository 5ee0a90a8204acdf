/**
 * Enrichment lookups over the control-plane view, with the per-user role lists cached (the
 * hot path asks for them once per event) and dropped whenever the view changes.
 */
import type { ControlPlaneView } from '../core/controlPlane/index.js';
import type { Directory } from './enrich.js';

export function controlPlaneDirectory(view: ControlPlaneView): Directory & { dispose(): void } {
  let roles = new Map<string, readonly string[]>();
  const unsubscribe = view.onChange(() => {
    roles = new Map();
  });
  return {
    device: (id) => view.device(id),
    roleIdsOfUser(userId, enterpriseId) {
      const key = `${enterpriseId}/${userId}`;
      let ids = roles.get(key);
      if (!ids) {
        ids = view.rolesOfUser(userId, enterpriseId).map((r) => r.id);
        roles.set(key, ids);
      }
      return ids;
    },
    app: (id) => view.app(id),
    action: (id) => view.action(id),
    tower: (id) => view.tower(id),
    dispose: unsubscribe,
  };
}
