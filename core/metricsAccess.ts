/**
 * Who may read `/metrics`, for the api and the pipeline alike: with TOWERWATCH_METRICS_TOKEN set,
 * whoever sends it as a bearer token; without it, loopback clients only. Each server answers a
 * refusal in its own words; the two tests are here, once.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { BlockList, isIP } from 'node:net';

/** 127.0.0.0/8 and ::1, also as uWS spells them (full IPv6 form, IPv4-mapped). */
const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

/** True for 127.0.0.0/8, ::1 and IPv4-mapped loopback in any spelling; false for anything else or nothing. */
export function isLoopbackAddress(address: string | undefined): boolean {
  const family = address === undefined ? 0 : isIP(address);
  return family !== 0 && LOOPBACK.check(address as string, family === 6 ? 'ipv6' : 'ipv4');
}

/** The token of an `Authorization: Bearer <token>` header (any case of the scheme); null for any other header or none. */
export function bearerToken(header: string | undefined): string | null {
  return (header === undefined ? null : /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header)?.[1]) ?? null;
}

/** Constant time: both sides hashed to one length first, so neither content nor length leaks. */
export function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string): Buffer => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** Whether an `Authorization` header carries exactly `token` as a bearer token. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const given = bearerToken(header);
  return sameSecret(given ?? '', token) && given !== null;
}
