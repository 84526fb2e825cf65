package stackshift_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	stackshift "github.com/stackshift/stackshift/sdk-go"
)

// openssl runs the openssl CLI in dir.
func openssl(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
}

// makeCerts writes a trusted CA ("good"), an untrusted one ("rogue"), a server certificate
// for 127.0.0.1 and client certificates from each CA, like the reliability `tls` scenario.
func makeCerts(t *testing.T) string {
	dir := t.TempDir()
	for _, ca := range []string{"good", "rogue"} {
		openssl(t, dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
			"-keyout", ca+"-ca.key", "-out", ca+"-ca.pem", "-days", "2", "-subj", "/CN="+ca+" test CA",
			"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	}
	leaf := func(name, issuer, ext string) {
		if err := os.WriteFile(filepath.Join(dir, name+".ext"), []byte(ext), 0o600); err != nil {
			t.Fatal(err)
		}
		openssl(t, dir, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
			"-keyout", name+".key", "-out", name+".csr", "-subj", "/CN="+name)
		openssl(t, dir, "x509", "-req", "-in", name+".csr", "-CA", issuer+"-ca.pem", "-CAkey", issuer+"-ca.key",
			"-CAcreateserial", "-out", name+".pem", "-days", "2", "-extfile", name+".ext")
	}
	leaf("server", "good", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
	leaf("client", "good", "extendedKeyUsage=clientAuth\n")
	leaf("intruder", "rogue", "extendedKeyUsage=clientAuth\n")
	return dir
}

// startTLSServer starts the real server with TLS (and mTLS when clientCA is set) and
// returns its https:// endpoint.
func startTLSServer(t *testing.T, certs string, clientCA bool) string {
	t.Helper()
	bin := os.Getenv("STACKSHIFT_SERVER_BIN")
	if bin == "" {
		bin, _ = filepath.Abs("../target/debug/stackshift-server")
	}
	args := []string{"--listen", "127.0.0.1:0", "--database-url", "sqlite://" + filepath.Join(t.TempDir(), "tls.db"),
		"--tls-cert", filepath.Join(certs, "server.pem"), "--tls-key", filepath.Join(certs, "server.key")}
	if clientCA {
		args = append(args, "--tls-client-ca", filepath.Join(certs, "good-ca.pem"))
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "RUST_LOG=warn")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	scanner := bufio.NewScanner(out)
	for scanner.Scan() {
		if addr, ok := strings.CutPrefix(scanner.Text(), "stackshift-server listening on "); ok {
			go func() {
				for scanner.Scan() {
				}
			}()
			return "https://" + strings.TrimSpace(addr)
		}
	}
	t.Fatal("stackshift-server exited before listening")
	return ""
}

func readPEM(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// roundTrip runs one job over the options (a worker on the same client executes it).
func roundTrip(t *testing.T, opts stackshift.Options) {
	t.Helper()
	ctx := context.Background()
	c, err := stackshift.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := c.NewWorker(stackshift.WorkerOptions{Queues: []string{"tls"}})
	w.Job("ping", func(ctx context.Context, jc *stackshift.JobContext) (any, error) { return "pong", nil })
	w.Start()
	defer w.Shutdown(ctx)
	started, err := c.Start(ctx, "ping", nil, &stackshift.StartOptions{QueueName: "tls"})
	if err != nil {
		t.Fatal(err)
	}
	run, err := c.WaitForRun(ctx, started.ID, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != stackshift.StatusCompleted || string(run.Result) != `"pong"` {
		t.Fatalf("run over TLS: %s %s", run.Status, run.Result)
	}
}

// refused asserts that a start over opts fails, and returns the error text.
func refused(t *testing.T, opts stackshift.Options) string {
	t.Helper()
	c, err := stackshift.New(opts)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Start(ctx, "ping", nil, &stackshift.StartOptions{QueueName: "tls"})
	if err == nil {
		t.Fatal("the call succeeded; want a TLS refusal")
	}
	return err.Error()
}

func TestTLSAndMutualTLS(t *testing.T) {
	certs := makeCerts(t)
	ca := readPEM(t, certs, "good-ca.pem")

	tlsEndpoint := startTLSServer(t, certs, false)
	roundTrip(t, stackshift.Options{Endpoint: tlsEndpoint, TLSCAPEM: ca})
	// CA from the environment (a PEM path), as STACKSHIFT_TLS_CA.
	t.Setenv("STACKSHIFT_TLS_CA", filepath.Join(certs, "good-ca.pem"))
	roundTrip(t, stackshift.Options{Endpoint: tlsEndpoint})
	t.Setenv("STACKSHIFT_TLS_CA", "")
	msg := refused(t, stackshift.Options{Endpoint: tlsEndpoint, TLSCAPEM: readPEM(t, certs, "rogue-ca.pem")})
	t.Logf("untrusted server certificate: %s", msg)
	if !strings.Contains(msg, "certificate") {
		t.Fatalf("untrusted server certificate: %q does not say why", msg)
	}

	mtlsEndpoint := startTLSServer(t, certs, true)
	roundTrip(t, stackshift.Options{Endpoint: mtlsEndpoint, TLSCAPEM: ca,
		TLSClientCertPEM: readPEM(t, certs, "client.pem"), TLSClientKeyPEM: readPEM(t, certs, "client.key")})
	t.Setenv("STACKSHIFT_TLS_CLIENT_CERT", filepath.Join(certs, "client.pem"))
	t.Setenv("STACKSHIFT_TLS_CLIENT_KEY", filepath.Join(certs, "client.key"))
	roundTrip(t, stackshift.Options{Endpoint: mtlsEndpoint, TLSCAPEM: ca})
	t.Setenv("STACKSHIFT_TLS_CLIENT_CERT", "")
	t.Setenv("STACKSHIFT_TLS_CLIENT_KEY", "")
	msg = refused(t, stackshift.Options{Endpoint: mtlsEndpoint, TLSCAPEM: ca})
	if !strings.Contains(msg, "mutual TLS") {
		t.Fatalf("missing client certificate: %q does not say why", msg)
	}
	t.Logf("mTLS without a client certificate: %s", msg)
	msg = refused(t, stackshift.Options{Endpoint: mtlsEndpoint, TLSCAPEM: ca,
		TLSClientCertPEM: readPEM(t, certs, "intruder.pem"), TLSClientKeyPEM: readPEM(t, certs, "intruder.key")})
	if !strings.Contains(msg, "mutual TLS") {
		t.Fatalf("client certificate of another CA: %q does not say why", msg)
	}
	t.Logf("mTLS with a client certificate of another CA: %s", msg)
	// Half an identity is refused when the client is created.
	if _, err := stackshift.New(stackshift.Options{Endpoint: mtlsEndpoint, TLSClientCertPEM: readPEM(t, certs, "client.pem")}); err == nil ||
		!strings.Contains(err.Error(), "both") {
		t.Fatalf("cert without key: %v", err)
	}
}
