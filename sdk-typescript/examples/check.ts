/**
 * A tiny check helper shared by the examples: prints `[ok]`/`[FAILED]` per check and exits
 * non-zero at the end when any check failed.
 */
const failures: string[] = [];

/** Records one check. */
export function check(ok: boolean, what: string): void {
  console.log(`  [${ok ? "ok" : "FAILED"}] ${what}`);
  if (!ok) failures.push(what);
}

/** Exits with status 1 when a check failed, else prints `name: all checks passed`. */
export function finish(name: string): void {
  if (failures.length > 0) {
    console.error(`${failures.length} check(s) failed: ${failures.join("; ")}`);
    process.exit(1);
  }
  console.log(`${name}: all checks passed`);
}

/** A short unique suffix so repeated runs against one server do not collide. */
export function uniqueSuffix(): string {
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}
