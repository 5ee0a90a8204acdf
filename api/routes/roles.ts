/** Role assignments: policies to roles, roles to users; plus the enterprise's users and roles to pick from. */
import { z } from 'zod';
import { ConflictError, InvalidKeyError, NotFoundError, rolePolicyId, userRoleId, type EntityByKind } from '../../core/controlPlane/index.js';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import type { Reply } from '../http.js';
import { ApiError } from '../errors.js';
import { enterpriseQuery, id, iso, pageInfo, pageQuery, paginate, naturalCompare } from '../schemas.js';
import { scopeOf, viewReplyKey } from '../tenancy.js';

const notIn = (what: string, value: string): ApiError => new ApiError(404, 'not_found', `no ${what} '${value}' in this enterprise`, { [`${what}_id`]: value });

export function roleRoutes(ctx: ApiContext): ApiRoute[] {
  const { view, store } = ctx;

  /** Stores an assignment unless it exists: 201 `assigned`, or 200 `already_assigned` with when it was. */
  async function assign<K extends 'role_policy' | 'user_role'>(
    kind: K,
    enterprise: string,
    id: string,
    value: Omit<EntityByKind[K], 'assigned_at'>,
    shown: Record<string, string>,
    author: string,
  ): Promise<Reply> {
    const existing = view.get(kind, enterprise, id);
    if (existing !== undefined) return { body: { ...shown, status: 'already_assigned', assigned_at: existing.value.assigned_at } };
    const assigned_at = iso(ctx.now());
    ctx.versions.noteAuthor(enterprise, author);
    try {
      await store.create(kind, { ...value, assigned_at } as EntityByKind[K]);
    } catch (err) {
      if (!(err instanceof ConflictError)) throw err; // assigned meanwhile: the same outcome
    }
    return { status: 201, body: { ...shown, status: 'assigned', assigned_at } };
  }

  /** Removes an assignment: 204, or 404 when there is none (ids that cannot form a key included). */
  async function unassign(kind: 'role_policy' | 'user_role', enterprise: string, id: string, missing: string, author: string): Promise<Reply> {
    ctx.versions.noteAuthor(enterprise, author);
    try {
      await store.delete(kind, enterprise, id);
    } catch (err) {
      if (err instanceof NotFoundError || err instanceof InvalidKeyError) throw new ApiError(404, 'not_found', missing);
      throw err;
    }
    return { status: 204 };
  }

  const assigned = z.strictObject({ status: z.enum(['assigned', 'already_assigned']), assigned_at: z.string() });
  return [
    route({
      method: 'get',
      path: '/users',
      cacheKey: (c) => viewReplyKey(ctx.view, c),
      tag: 'roles',
      summary: "The enterprise's users with their roles",
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery }),
      response: z.strictObject({
        users: z.array(z.strictObject({ id: z.string(), name: z.string(), email: z.string(), role_ids: z.array(z.string()) })),
        ...pageInfo,
      }),
      handler: ({ query, principal }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const users = view.usersOfEnterprise(enterprise).sort((a, b) => naturalCompare(a.id, b.id));
        const { items, info } = paginate(users, query.page, query.limit);
        return {
          body: {
            users: items.map((u) => ({
              id: u.id,
              name: u.name,
              email: u.email,
              role_ids: view
                .rolesOfUser(u.id, enterprise)
                .map((r) => r.id)
                .sort(),
            })),
            ...info,
          },
        };
      },
    }),
    route({
      method: 'get',
      path: '/roles',
      cacheKey: (c) => viewReplyKey(ctx.view, c),
      tag: 'roles',
      summary: "The enterprise's roles",
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery }),
      response: z.strictObject({ roles: z.array(z.strictObject({ id: z.string(), name: z.string(), policy_ids: z.array(z.string()) })), ...pageInfo }),
      handler: ({ query, principal }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const roles = view.rolesOfEnterprise(enterprise).sort((a, b) => naturalCompare(a.id, b.id));
        const { items, info } = paginate(roles, query.page, query.limit);
        return {
          body: {
            roles: items.map((r) => ({
              id: r.id,
              name: r.name,
              policy_ids: view
                .policiesOfRole(r.id, enterprise)
                .map((p) => p.id)
                .sort(),
            })),
            ...info,
          },
        };
      },
    }),
    route({
      method: 'post',
      path: '/roles/policies/assign',
      tag: 'roles',
      summary: 'Assign a policy to a role',
      access: 'write',
      body: z.strictObject({ ...enterpriseQuery, role_id: id, policy_id: id }),
      response: assigned.extend({ role_id: z.string(), policy_id: z.string() }),
      handler: async ({ body, principal }) => {
        const enterprise = scopeOf(view, principal, body.enterprise_id);
        if (view.role(body.role_id, enterprise) === undefined) throw notIn('role', body.role_id);
        if (view.policy(body.policy_id, enterprise) === undefined) throw notIn('policy', body.policy_id);
        const shown = { role_id: body.role_id, policy_id: body.policy_id };
        return assign(
          'role_policy',
          enterprise,
          rolePolicyId(body.role_id, body.policy_id),
          { enterprise_id: enterprise, ...shown },
          shown,
          principal.account.username,
        );
      },
    }),
    route({
      method: 'post',
      path: '/users/roles/assign',
      tag: 'roles',
      summary: 'Assign a role to a user',
      access: 'write',
      body: z.strictObject({ ...enterpriseQuery, user_id: id, role_id: id }),
      response: assigned.extend({ user_id: z.string(), role_id: z.string() }),
      handler: async ({ body, principal }) => {
        const enterprise = scopeOf(view, principal, body.enterprise_id);
        if (view.user(body.user_id, enterprise) === undefined) throw notIn('user', body.user_id);
        if (view.role(body.role_id, enterprise) === undefined) throw notIn('role', body.role_id);
        const shown = { user_id: body.user_id, role_id: body.role_id };
        return assign(
          'user_role',
          enterprise,
          userRoleId(body.user_id, body.role_id),
          { enterprise_id: enterprise, ...shown },
          shown,
          principal.account.username,
        );
      },
    }),
    route({
      method: 'get',
      path: '/roles/policies',
      cacheKey: (c) => viewReplyKey(ctx.view, c),
      tag: 'roles',
      summary: 'Policies assigned to a role',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery, role: id }),
      response: z.strictObject({
        role_id: z.string(),
        role_name: z.string(),
        policies: z.array(z.strictObject({ policy_id: z.string(), name: z.string(), enabled: z.boolean() })),
        ...pageInfo,
      }),
      handler: ({ query, principal }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const role = view.role(query.role, enterprise);
        if (role === undefined) throw notIn('role', query.role);
        const policies = view.policiesOfRole(role.id, enterprise).sort((a, b) => naturalCompare(a.id, b.id));
        const { items, info } = paginate(policies, query.page, query.limit);
        return {
          body: { role_id: role.id, role_name: role.name, policies: items.map((p) => ({ policy_id: p.id, name: p.name, enabled: p.enabled })), ...info },
        };
      },
    }),
    route({
      method: 'get',
      path: '/users/roles',
      cacheKey: (c) => viewReplyKey(ctx.view, c),
      tag: 'roles',
      summary: 'Roles assigned to a user',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery, user: id }),
      response: z.strictObject({
        user_id: z.string(),
        user_name: z.string(),
        roles: z.array(z.strictObject({ role_id: z.string(), name: z.string() })),
        ...pageInfo,
      }),
      handler: ({ query, principal }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const user = view.user(query.user, enterprise);
        if (user === undefined) throw notIn('user', query.user);
        const roles = view.rolesOfUser(user.id, enterprise).sort((a, b) => naturalCompare(a.id, b.id));
        const { items, info } = paginate(roles, query.page, query.limit);
        return { body: { user_id: user.id, user_name: user.name, roles: items.map((r) => ({ role_id: r.id, name: r.name })), ...info } };
      },
    }),
    route({
      method: 'del',
      path: '/roles/{role_id}/policies/{policy_id}',
      tag: 'roles',
      summary: 'Remove a policy from a role',
      access: 'write',
      query: z.strictObject({ ...enterpriseQuery }),
      successStatus: 204,
      handler: async ({ query, principal, params }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const [role, policy] = [params['role_id'] ?? '', params['policy_id'] ?? ''];
        return unassign(
          'role_policy',
          enterprise,
          rolePolicyId(role, policy),
          `policy '${policy}' is not assigned to role '${role}' in this enterprise`,
          principal.account.username,
        );
      },
    }),
    route({
      method: 'del',
      path: '/users/{user_id}/roles/{role_id}',
      tag: 'roles',
      summary: 'Remove a role from a user',
      access: 'write',
      query: z.strictObject({ ...enterpriseQuery }),
      successStatus: 204,
      handler: async ({ query, principal, params }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const [user, role] = [params['user_id'] ?? '', params['role_id'] ?? ''];
        return unassign(
          'user_role',
          enterprise,
          userRoleId(user, role),
          `role '${role}' is not assigned to user '${user}' in this enterprise`,
          principal.account.username,
        );
      },
    }),
  ];
}
