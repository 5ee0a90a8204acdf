/**
 * The work of one batch, as a worker does it: decode every frame, enrich each event, evaluate
 * each enterprise's events in one WASM call, and turn the results into rows for ClickHouse,
 * alerts for the live socket, remediation requests and dead letters. Pure apart from the
 * lookups it is given, so it is tested without threads or servers.
 */
import type { Alert } from '../core/live.js';
import type { AppUsageValues, ViolationValues } from '../core/clickhouse/index.js';
import type { RemediationRequest } from '../core/remediation.js';
import type { ControlPlaneView } from '../core/controlPlane/index.js';
import type { Device, UsageEvent } from '../core/domain.js';
import { addReason, checkSubject, emptySummary, REJECTION, type DeadLetterSummary } from '../core/deadLetters.js';
import { decodeUsage, type EventRejection } from '../core/wire.js';
import { enrichEvent, type Directory, type EvalEvent, type PolicyModule, type Verdict } from '../rules-wasm/index.js';

export interface BatchMessage {
  /** JetStream stream sequence. */
  seq: number;
  subject: string;
  data: Uint8Array;
}

/** A message with rejections: one per message, its reasons bounded (core/deadLetters.ts). */
export interface DeadLetter {
  seq: number;
  subject: string;
  summary: DeadLetterSummary;
}

/** What the pipeline queues on REMEDIATION: always automatic, and only blocks. */
export type AutoRemediationRequest = RemediationRequest & { trigger: 'auto'; action: 'block_device' | 'block_app' };

export interface BatchOutput {
  /**
   * Rows as positional values, for APP_USAGE.encode (core/clickhouse/rows.ts); empty when the
   * caller passed {@link RowWriters} (the rows went to them instead).
   */
  appUsage: AppUsageValues[];
  violations: ViolationValues[];
  alerts: Alert[];
  remediations: AutoRemediationRequest[];
  deadLetters: DeadLetter[];
  /** Sequences of messages that produced at least one app_usage row. */
  storedSeqs: number[];
  counts: { events: number; enforced: number; unregistered: number; violations: number; rejectedEvents: number; rejectedMessages: number };
  /** Policy version that decided each enterprise's events in this batch. */
  policyVersions: Record<string, string>;
}

/**
 * Where each row goes as it is made. A worker writes them straight into its Native column buffers: rows
 * kept until the end of a 64k-event batch outlive the young generation, and the garbage
 * collector's copying of them cost more than their encoding (bench e2e, perf).
 */
export interface RowWriters {
  appUsage(values: AppUsageValues): void;
  violation(values: ViolationValues): void;
}

export interface BatchContext {
  directory: Directory;
  view: ControlPlaneView;
  module(enterpriseId: string): PolicyModule | undefined;
  /** The enterprise's shadow module (rules-wasm/policyRegistry.ts), when it has anything in shadow mode. */
  shadowModule?(enterpriseId: string): PolicyModule | undefined;
}

interface Pending {
  event: UsageEvent;
  seq: number;
  device: Device | undefined;
  enterpriseId: string;
  userId: string;
  eval: EvalEvent | null;
  verdict: Verdict | null;
  version: string;
  /** The shadow module's verdict, when the enterprise has one. */
  shadow: Verdict | null;
}

const UNREGISTERED = 'unregistered';
const NO_VERSION = 'none';
const NO_INPUTS = ['', '', '', '', 0] as const;

/** The evaluator's inputs not stored elsewhere in the row (role_ids … decision_inputs); none for an unenforced event. */
function decisionInputs(ev: EvalEvent | null): readonly [string, string, string, string, number] {
  return ev === null ? NO_INPUTS : [ev.role_ids.join(','), ev.region ?? '', ev.os ?? '', ev.os_version ?? '', 1];
}

export function processBatch(messages: readonly BatchMessage[], ctx: BatchContext, writers?: RowWriters): BatchOutput {
  const out: BatchOutput = {
    appUsage: [],
    violations: [],
    alerts: [],
    remediations: [],
    deadLetters: [],
    storedSeqs: [],
    counts: { events: 0, enforced: 0, unregistered: 0, violations: 0, rejectedEvents: 0, rejectedMessages: 0 },
    policyVersions: {},
  };
  const pending: Pending[] = [];
  const byEnterprise = new Map<string, number[]>();
  const view = ctx.view;
  const rows: RowWriters = writers ?? { appUsage: (values) => void out.appUsage.push(values), violation: (values) => void out.violations.push(values) };

  for (const msg of messages) {
    const reasons = emptySummary();
    const rejectMessage = (code: string, message: string): void => {
      addReason(reasons, { index: -1, code, message });
      out.deadLetters.push({ seq: msg.seq, subject: msg.subject, summary: reasons });
      out.counts.rejectedMessages++;
    };
    // The subject is the truth about who sent it (NATS permissions are per subject).
    const badSubject = checkSubject('usage', msg.subject);
    if (badSubject) {
      rejectMessage(badSubject.code, badSubject.message);
      continue;
    }
    const decoded = decodeUsage(msg.data);
    if (!decoded.ok) {
      rejectMessage(decoded.code, decoded.message);
      continue;
    }
    // Carrier and tower are the message's (every event of it has the same).
    const first = decoded.events[0];
    const mismatch = first ? checkSubject('usage', msg.subject, first.carrier, first.tower) : null;
    if (mismatch) {
      rejectMessage(mismatch.code, mismatch.message);
      continue;
    }
    for (const r of decoded.rejected) addReason(reasons, r);
    const events = uniqueEvents(decoded.events, decoded.rejected, reasons);
    out.counts.rejectedEvents += reasons.total;
    if (reasons.total > 0) out.deadLetters.push({ seq: msg.seq, subject: msg.subject, summary: reasons });
    if (events.length > 0) out.storedSeqs.push(msg.seq);
    for (const event of events) {
      const enriched = enrichEvent(ctx.directory, event);
      const p: Pending = enriched.enforced
        ? {
            event,
            seq: msg.seq,
            device: enriched.device,
            enterpriseId: enriched.enterpriseId,
            userId: enriched.userId,
            eval: enriched.event,
            verdict: null,
            version: NO_VERSION,
            shadow: null,
          }
        : {
            event,
            seq: msg.seq,
            device: enriched.device,
            enterpriseId: enriched.device?.enterprise_id ?? '',
            userId: '',
            eval: null,
            verdict: null,
            version: NO_VERSION,
            shadow: null,
          };
      if (p.eval) {
        let list = byEnterprise.get(p.enterpriseId);
        if (!list) byEnterprise.set(p.enterpriseId, (list = []));
        list.push(pending.length);
      }
      pending.push(p);
    }
    // Each frame is evaluated and written before the next is decoded: a batch's events never
    // all live at once, so they die young instead of being copied by the garbage collector.
    evaluate();
    emit();
    pending.length = 0;
    byEnterprise.clear();
  }
  return out;

  function evaluate(): void {
    for (const [enterpriseId, indexes] of byEnterprise) {
      const module = ctx.module(enterpriseId);
      if (!module) continue; // no compiled policy (yet): recorded as unregistered below, never guessed
      out.policyVersions[enterpriseId] = module.hash;
      run(module, indexes, (p, v) => {
        p.verdict = v;
        p.version = module.hash;
      });
      // Shadow-mode policies: evaluated as if enforced, stored beside the verdict, never acted on.
      const shadow = ctx.shadowModule?.(enterpriseId);
      if (shadow !== undefined) run(shadow, indexes, (p, v) => (p.shadow = v));
    }
  }

  /** Evaluates the pending events at `indexes` with `module`, a batch of its capacity at a time. */
  function run(module: PolicyModule, indexes: readonly number[], set: (p: Pending, v: Verdict) => void): void {
    const cols = module.columns(indexes.length);
    for (let start = 0; start < indexes.length; start += cols.capacity) {
      const n = Math.min(cols.capacity, indexes.length - start);
      for (let i = 0; i < n; i++) module.encoder.encode(cols, i, (pending[indexes[start + i] as number] as Pending).eval as EvalEvent);
      const ranks = module.run(n);
      for (let i = 0; i < n; i++) set(pending[indexes[start + i] as number] as Pending, module.verdictOf(ranks[i] ?? 0));
    }
  }

  function emit(): void {
    out.counts.events += pending.length;
    for (const p of pending) {
      const e = p.event;
      const app = ctx.directory.app(e.app);
      const action = ctx.directory.action(e.action);
      const user = p.userId ? view.user(p.userId, p.enterpriseId) : undefined;
      const v = p.verdict;
      const verdict = v ? v.permission : UNREGISTERED;
      const policy = v?.policy_id ? view.policy(v.policy_id, p.enterpriseId) : undefined;
      if (v) out.counts.enforced++;
      else out.counts.unregistered++;
      rows.appUsage([
        p.enterpriseId,
        e.ts,
        e.carrier,
        e.tower,
        e.event_id,
        p.seq,
        e.device,
        p.userId,
        user?.name ?? '',
        e.app,
        app?.name ?? e.app,
        app?.category ?? '',
        e.action,
        action?.name ?? e.action,
        e.bytes_up,
        e.bytes_down,
        verdict,
        v?.policy_id ?? '',
        policy?.name ?? '',
        v?.rule_id ?? '',
        v?.severity ?? '',
        v?.remediation ?? '',
        p.version,
        ...decisionInputs(p.eval),
        p.shadow?.permission ?? '',
        p.shadow?.policy_id ?? '',
        p.shadow?.rule_id ?? '',
      ]);
      if (v?.permission !== 'deny') continue;
      out.counts.violations++;
      const tower = ctx.directory.tower(e.tower);
      const alert: Alert = {
        alert_id: `${e.carrier}:${e.tower}:${e.event_id}`,
        enterprise_id: p.enterpriseId,
        ts: e.ts,
        user_id: p.userId,
        user_name: user?.name ?? '',
        device_id: e.device,
        app_id: e.app,
        app_name: app?.name ?? e.app,
        action: action?.name ?? e.action,
        tower_id: e.tower,
        tower_location: tower?.location ?? '',
        region: tower?.region ?? '',
        lat: tower?.lat ?? null,
        lon: tower?.lon ?? null,
        carrier: e.carrier,
        policy_id: v.policy_id ?? '',
        policy_name: policy?.name ?? '',
        rule_id: v.rule_id,
        severity: v.severity ?? 'medium',
        remediation: v.remediation,
        policy_version: p.version,
      };
      out.alerts.push(alert);
      rows.violation([
        alert.alert_id,
        alert.enterprise_id,
        e.ts,
        e.carrier,
        e.tower,
        alert.tower_location,
        alert.region,
        e.event_id,
        p.seq,
        e.device,
        p.userId,
        alert.user_name,
        e.app,
        alert.app_name,
        e.action,
        alert.action,
        alert.policy_id,
        alert.policy_name,
        v.rule_id ?? '',
        alert.severity,
        v.remediation ?? '',
        p.version,
      ]);
      if ((v.remediation === 'block_device' || v.remediation === 'block_app') && view.planOfEnterprise(p.enterpriseId)?.auto_remediation) {
        out.remediations.push({
          type: 'remediation',
          trigger: 'auto',
          alert_id: alert.alert_id,
          enterprise_id: p.enterpriseId,
          device_id: e.device,
          tower_id: e.tower,
          carrier: e.carrier,
          app_id: e.app,
          action: v.remediation,
          rule_id: v.rule_id,
          requested_at: e.ts,
        });
      }
    }
  }
}

/**
 * The events of one frame with each `event_id` once: a later copy is rejected with
 * `duplicate_event_id` (its row index in the frame). Towers number events increasingly, so a
 * frame is checked in one pass and only a frame out of order pays for a set.
 */
function uniqueEvents(events: UsageEvent[], rejected: readonly EventRejection[], reasons: DeadLetterSummary): UsageEvent[] {
  let increasing = true;
  for (let i = 1; i < events.length; i++) {
    if ((events[i] as UsageEvent).event_id <= (events[i - 1] as UsageEvent).event_id) {
      increasing = false;
      break;
    }
  }
  if (increasing) return events;
  const seen = new Set<number>();
  const kept: UsageEvent[] = [];
  // The decoder keeps row order and lists rejected rows by ascending index: recover each event's row.
  let r = 0;
  let row = 0;
  for (const e of events) {
    while (r < rejected.length && (rejected[r] as EventRejection).index === row) {
      r++;
      row++;
    }
    if (seen.has(e.event_id)) {
      addReason(reasons, {
        index: row,
        code: REJECTION.duplicateEventId,
        message: `events[${row}].event_id ${e.event_id} is already in this frame`,
        event_id: e.event_id,
      });
    } else {
      seen.add(e.event_id);
      kept.push(e);
    }
    row++;
  }
  return kept;
}
