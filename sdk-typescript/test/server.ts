/**
 * Test harness: starts the real `stackshift-server` binary on a free port over a fresh SQLite
 * file. The binary is `$STACKSHIFT_SERVER_BIN`, else `../target/debug/stackshift-server`
 * (build it with `cargo build -p stackshift-server`).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** A running server, stopped by {@link TestServer.stop}. */
export interface TestServer {
  endpoint: string;
  stop(): Promise<void>;
}

/** The server binary to test against. */
export function serverBinary(): string {
  const fromEnv = process.env["STACKSHIFT_SERVER_BIN"];
  if (fromEnv) return fromEnv;
  // build/test/server.js -> repository root is three levels up.
  const here = dirname(fileURLToPath(import.meta.url));
  return resolve(here, "..", "..", "..", "target", "debug", "stackshift-server");
}

/** Starts a server with extra arguments; resolves once it listens. */
export async function startServer(args: string[] = []): Promise<TestServer> {
  const bin = serverBinary();
  if (!existsSync(bin)) throw new Error(`${bin} does not exist: run 'cargo build -p stackshift-server' or set STACKSHIFT_SERVER_BIN`);
  const dir = mkdtempSync(join(tmpdir(), "stackshift-ts-test-"));
  const child: ChildProcess = spawn(bin, ["--listen", "127.0.0.1:0", "--database-url", `sqlite://${join(dir, "test.db")}`, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: process.env["RUST_LOG"] ?? "warn" },
  });
  const addr = await new Promise<string>((resolveAddr, reject) => {
    const timer = setTimeout(() => reject(new Error("stackshift-server did not start listening within 30 s")), 30_000);
    child.once("exit", (code) => reject(new Error(`stackshift-server exited with ${code} before listening`)));
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      const m = /listening on (\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolveAddr(m[1]!);
      }
    });
  });
  return {
    endpoint: `http://${addr}`,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
