/**
 * Who may see and change what. Every console account belongs to one enterprise, or is a
 * carrier operator who sees the enterprises whose devices use its SIMs (and its own towers).
 * Routes ask `scopeOf` for the one enterprise a request is about; nothing else picks it.
 */
import type { ControlPlaneView } from '../core/controlPlane/index.js';
import type { AccountRole, Enterprise } from '../core/domain.js';
import type { Principal } from './auth.js';
import { ApiError } from './errors.js';
import type { Access } from './http.js';

/** What each console role may do: read (control plane, dashboards), history (per-user usage logs), write. */
export const ROLE_ACCESS: Readonly<Record<AccountRole, ReadonlySet<Access>>> = {
  enterprise_admin: new Set<Access>(['read', 'history', 'write']),
  analyst: new Set<Access>(['read', 'history']),
  viewer: new Set<Access>(['read']),
  carrier_operator: new Set<Access>(['read', 'history']),
};

/** @throws {ApiError} 403 when the account's role lacks `access` */
export function requireAccess(principal: Principal, access: Access): void {
  if (access === 'public' || ROLE_ACCESS[principal.account.role].has(access)) return;
  const needs = access === 'write' ? 'an enterprise admin' : 'an analyst or admin';
  throw new ApiError(403, 'forbidden', `this needs ${needs}; ${principal.account.username} is ${principal.account.role}`, {
    role: principal.account.role,
    needs: access,
  });
}

/** Enterprises a carrier operator may see. */
export function enterprisesOfCarrier(view: ControlPlaneView, carrierId: string): Enterprise[] {
  return view.list('enterprise', undefined).filter((e) => e.carrier_ids?.includes(carrierId) ?? false);
}

/** Enterprises an account may see. */
export function visibleEnterprises(view: ControlPlaneView, principal: Principal): Enterprise[] {
  const a = principal.account;
  if (a.enterprise_id !== null) {
    const e = view.enterprise(a.enterprise_id);
    return e === undefined ? [] : [e];
  }
  return a.carrier_id === null ? [] : enterprisesOfCarrier(view, a.carrier_id);
}

/**
 * The enterprise a request is about: the account's own, or, for a carrier operator, the
 * `enterprise_id` it names. An enterprise account naming another enterprise is refused.
 * @throws {ApiError} 400 `enterprise_required`, 403 `tenant_forbidden`
 */
export function scopeOf(view: ControlPlaneView, principal: Principal, requested: string | undefined): string {
  const a = principal.account;
  if (a.enterprise_id !== null) {
    if (requested !== undefined && requested !== a.enterprise_id) {
      throw new ApiError(403, 'tenant_forbidden', `${a.username} belongs to another enterprise and cannot see '${requested}'`, { enterprise_id: requested });
    }
    return a.enterprise_id;
  }
  const allowed = visibleEnterprises(view, principal).map((e) => e.id);
  if (requested === undefined) {
    throw new ApiError(400, 'enterprise_required', 'a carrier operator names the enterprise: add ?enterprise_id=…', { allowed });
  }
  if (!allowed.includes(requested)) {
    throw new ApiError(403, 'tenant_forbidden', `enterprise '${requested}' has no devices on this carrier's network`, { enterprise_id: requested });
  }
  return requested;
}

/**
 * Reply-cache key of a GET answered from the control-plane view alone: any change to the view
 * (its version), another enterprise, other parameters, or another role make another key.
 */
export function viewReplyKey(view: ControlPlaneView, ctx: { principal: Principal; query: unknown; params: Readonly<Record<string, string>> }): string {
  const q = ctx.query as { enterprise_id?: string } | undefined;
  return `${view.version}|${scopeOf(view, ctx.principal, q?.enterprise_id)}|${ctx.principal.account.role}|${JSON.stringify(ctx.query)}|${JSON.stringify(ctx.params)}`;
}
