/**
 * TLS and mutual TLS end to end: the real server started with openssl-made certificates (a
 * trusted CA, a rogue CA, a server certificate for 127.0.0.1, client certificates from each CA).
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StackShift, InvalidArgumentError, UnavailableError, type StackShiftOptions } from "../src/index.js";
import { startServer, type TestServer } from "./server.js";

let certs: string;
let tls: TestServer;
let mtls: TestServer;

function openssl(...args: string[]): void {
  execFileSync("openssl", args, { cwd: certs, stdio: "pipe" });
}

function leaf(name: string, issuer: string, ext: string): void {
  writeFileSync(join(certs, `${name}.ext`), ext);
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
  openssl("x509", "-req", "-in", `${name}.csr`, "-CA", `${issuer}-ca.pem`, "-CAkey", `${issuer}-ca.key`, "-CAcreateserial", "-out", `${name}.pem`, "-days", "2", "-extfile", `${name}.ext`);
}

const https = (s: TestServer) => s.endpoint.replace("http://", "https://");
const file = (name: string) => join(certs, name);

before(async () => {
  certs = mkdtempSync(join(tmpdir(), "stackshift-ts-certs-"));
  for (const ca of ["good", "rogue"]) {
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${ca}-ca.key`, "-out", `${ca}-ca.pem`,
      "-days", "2", "-subj", `/CN=${ca} test CA`, "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  }
  leaf("server", "good", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  leaf("client", "good", "extendedKeyUsage=clientAuth\n");
  leaf("intruder", "rogue", "extendedKeyUsage=clientAuth\n");
  const serverTls = ["--tls-cert", file("server.pem"), "--tls-key", file("server.key")];
  tls = await startServer(serverTls);
  mtls = await startServer([...serverTls, "--tls-client-ca", file("good-ca.pem")]);
});

after(async () => {
  await tls.stop();
  await mtls.stop();
  rmSync(certs, { recursive: true, force: true });
});

async function roundTrip(options: StackShiftOptions): Promise<void> {
  const ss = new StackShift(options);
  ss.job("ping", async () => "pong");
  const worker = ss.work({ queues: ["tls"] });
  try {
    const started = await ss.start("ping", null, { queueName: "tls" });
    const run = await ss.waitForRun(started.id, { timeout: "20s" });
    assert.equal(run.status, "completed");
    assert.equal(run.result, "pong");
  } finally {
    await worker.shutdown();
  }
}

async function refused(options: StackShiftOptions): Promise<string> {
  const ss = new StackShift(options);
  const err = await ss.start("ping", null, { queueName: "tls" }).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(err instanceof UnavailableError, `want UnavailableError, got ${String(err)}`);
  return err.message;
}

test("a run completes over TLS with the CA as bytes, as a path, and from STACKSHIFT_TLS_CA", async () => {
  await roundTrip({ endpoint: https(tls), tlsCa: readFileSync(file("good-ca.pem")) });
  await roundTrip({ endpoint: https(tls), tlsCa: file("good-ca.pem") });
  process.env["STACKSHIFT_TLS_CA"] = file("good-ca.pem");
  try {
    await roundTrip({ endpoint: https(tls) });
  } finally {
    delete process.env["STACKSHIFT_TLS_CA"];
  }
});

test("an untrusted server certificate is refused with a clear error", async () => {
  const msg = await refused({ endpoint: https(tls), tlsCa: file("rogue-ca.pem") });
  assert.match(msg, /tlsCa/);
});

test("a run completes over mutual TLS, with the identity from options and from the environment", async () => {
  const ca = file("good-ca.pem");
  await roundTrip({ endpoint: https(mtls), tlsCa: ca, tlsClientCert: file("client.pem"), tlsClientKey: file("client.key") });
  process.env["STACKSHIFT_TLS_CLIENT_CERT"] = file("client.pem");
  process.env["STACKSHIFT_TLS_CLIENT_KEY"] = file("client.key");
  try {
    await roundTrip({ endpoint: https(mtls), tlsCa: ca });
  } finally {
    delete process.env["STACKSHIFT_TLS_CLIENT_CERT"];
    delete process.env["STACKSHIFT_TLS_CLIENT_KEY"];
  }
});

test("a missing client certificate, or one of another CA, is refused with a clear error", async () => {
  const ca = file("good-ca.pem");
  assert.match(await refused({ endpoint: https(mtls), tlsCa: ca }), /mutual TLS/);
  assert.match(
    await refused({ endpoint: https(mtls), tlsCa: ca, tlsClientCert: file("intruder.pem"), tlsClientKey: file("intruder.key") }),
    /mutual TLS/,
  );
});

test("half an identity or an unreadable CA file is an invalid argument", () => {
  assert.throws(() => new StackShift({ endpoint: "https://127.0.0.1:1", tlsClientCert: file("client.pem") }), InvalidArgumentError);
  assert.throws(() => new StackShift({ endpoint: "https://127.0.0.1:1", tlsCa: "/nonexistent/ca.pem" }), /cannot read/);
});
