package redact_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/redact"
)

const canary = "gr4pe-Canary/S3cret+Value=42&more"

func TestRedactForms(t *testing.T) {
	r := redact.New(0, canary)
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"plain", "token is " + canary + ".", "token is ***."},
		{"twice", canary + " and " + canary, "*** and ***"},
		{"query escaped", "https://x/?t=" + url.QueryEscape(canary), "https://x/?t=***"},
		{"path escaped", "https://x/" + url.PathEscape(canary) + "/y", "https://x/***/y"},
		{"json string", `{"v":"` + strings.ReplaceAll(canary, "&", `\u0026`) + `"}`, `{"v":"***"}`},
		{"go quoted", strconv.Quote("x\t" + canary), `"x\t***"`},
		{"base64 std padded", "b=" + base64.StdEncoding.EncodeToString([]byte(canary)), "b=***"},
		{"base64 url padded", "b=" + base64.URLEncoding.EncodeToString([]byte(canary)), "b=***"},
		{"base64 std raw", "b=" + base64.RawStdEncoding.EncodeToString([]byte(canary)) + " end", "b=*** end"},
		{"base64 url raw", "b=" + base64.RawURLEncoding.EncodeToString([]byte(canary)) + " end", "b=*** end"},
		{"nothing", "Plan: 3 to add, 0 to change, 0 to destroy.", "Plan: 3 to add, 0 to change, 0 to destroy."},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, r.Redact(tc.in))
		})
	}
}

// A secret inside a longer base64 blob (a kubeconfig, a user-data script)
// sits at one of three byte alignments; the characters that carry only its
// bits must go wherever it sits. The check is independent of how the
// redactor computes its fragments: encoding the same blob with every secret
// bit flipped shows which characters the secret influences; all of them but
// the (at most one) mixed character at each end must be inside the ***.
func TestRedactBase64InsideBlob(t *testing.T) {
	r := redact.New(0, canary)
	flipped := []byte(canary)
	for i := range flipped {
		flipped[i] ^= 0xff
	}
	encodings := []struct {
		name string
		enc  *base64.Encoding
	}{{"std", base64.StdEncoding}, {"url", base64.URLEncoding}, {"raw_std", base64.RawStdEncoding}, {"raw_url", base64.RawURLEncoding}}
	for _, e := range encodings {
		enc := e.enc
		for prefixLen := 0; prefixLen < 6; prefixLen++ {
			for _, suffixLen := range []int{0, 1, 2, 7} {
				t.Run(fmt.Sprintf("%s/prefix%d/suffix%d", e.name, prefixLen, suffixLen), func(t *testing.T) {
					prefix, suffix := randomBytes(t, prefixLen), randomBytes(t, suffixLen)
					blob := enc.EncodeToString(cat(prefix, []byte(canary), suffix))
					other := enc.EncodeToString(cat(prefix, flipped, suffix))
					first, last := -1, -1
					for i := range blob {
						if blob[i] != other[i] {
							if first < 0 {
								first = i
							}
							last = i
						}
					}
					out := r.Redact(blob)
					head, tail, ok := strings.Cut(out, redact.Mask)
					require.True(t, ok, "nothing redacted in %q", blob)
					require.Equal(t, blob[:len(head)], head)
					require.Equal(t, blob[len(blob)-len(tail):], tail)
					require.LessOrEqual(t, len(head), first+1, "secret-only characters before the mask")
					require.GreaterOrEqual(t, len(blob)-len(tail), last, "secret-only characters after the mask")
				})
			}
		}
	}
}

func TestShortSecretsAreSkippedAndNamed(t *testing.T) {
	r := redact.New(0, "short", "", "long-enough-secret")
	require.Equal(t, []string{"secret #1"}, r.Skipped(), "the empty value is not worth a warning")
	require.Equal(t, "a short word, ***", r.Redact("a short word, long-enough-secret"))

	r.With("tiny", "another-long-one")
	require.Equal(t, []string{"secret #1", "secret #4"}, r.Skipped())
	require.Equal(t, "*** tiny", r.Redact("another-long-one tiny"))

	low := redact.New(4, "tiny")
	require.Equal(t, "a *** word", low.Redact("a tiny word"))
	require.Empty(t, low.Skipped())
}

func TestOverlappingSecretsAreRedactedAsOneRun(t *testing.T) {
	r := redact.New(0, "abcdefgh12", "gh12345678xyz")
	require.Equal(t, "[***]", r.Redact("[abcdefgh12345678xyz]"))
	require.Equal(t, "[***]", r.Redact("[abcdefgh12abcdefgh12]"), "adjacent occurrences")
	require.Equal(t, "abcdefgh1", r.Redact("abcdefgh1"), "a prefix of a secret is not the secret")
}

func TestMultiLineSecretMatchesLineByLine(t *testing.T) {
	pem := "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nq1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c2v3b4n5m6\n-----END PRIVATE KEY-----\n"
	r := redact.New(0, pem)
	require.Equal(t, "***", r.Redact("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"))
	require.Equal(t, `key = "***"`, r.Redact(`key = "`+strings.ReplaceAll(pem, "\n", `\n`)+`"`))
}

func TestNilAndZeroRedactorsRedactNothing(t *testing.T) {
	var nilR *redact.Redactor
	require.Equal(t, "x", nilR.Redact("x"))
	require.Zero(t, nilR.MaxLen())
	var zero redact.Redactor
	require.Equal(t, "x", zero.Redact("x"))
	zero.With("now-a-secret")
	require.Equal(t, "***", zero.Redact("now-a-secret"))
}

func TestFromEnviron(t *testing.T) {
	env := []string{
		"PATH=/usr/bin:/bin",
		"HOME=/home/grape",
		"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", // an identifier, not a secret
		"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		"AWS_SESSION_TOKEN=IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJH",
		"GRAPE_GIT_TOKEN=ghp_aaaaBBBBccccDDDDeeee",
		"GITHUB_TOKEN=ghp_zzzzYYYYxxxxWWWWvvvv",
		"TF_VAR_db_password=correct-horse-battery",
		"ARM_CLIENT_SECRET_VALUE=arm-client-secret-1",
		"SSH_PRIVATE_KEY=ssh-private-key-body",
		"INFRACOST_API_KEY=ico-0123456789abcdef",
		"TF_TOKEN_app_terraform_io=tfc-token-0123456",
		"MYCORP_VAULT_ROLE=role-id-12345678",
		"OTHER_THING=not-a-secret-at-all",
		"GRAPE_DATABASE_URL=postgres://grape:db%2Fpass%40word1@db.internal:5432/grape?sslmode=require",
		"DATABASE_URL=host=db user=x password='dsn pass 123' dbname=y",
		"SHORT_PASSWORD=abc",
		"EMPTY_TOKEN=",
	}
	r := redact.FromEnviron(env, []string{"mycorp_*"})
	redacted := []string{
		"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJH",
		"ghp_aaaaBBBBccccDDDDeeee", "ghp_zzzzYYYYxxxxWWWWvvvv", "correct-horse-battery", "arm-client-secret-1",
		"ssh-private-key-body", "ico-0123456789abcdef", "tfc-token-0123456", "role-id-12345678",
		"db/pass@word1", "db%2Fpass%40word1", "dsn pass 123",
	}
	for _, s := range redacted {
		require.Equal(t, "[***]", r.Redact("["+s+"]"), s)
	}
	for _, s := range []string{"/usr/bin:/bin", "AKIAIOSFODNN7EXAMPLE", "not-a-secret-at-all", "db.internal", "grape"} {
		require.Equal(t, s, r.Redact(s))
	}
	require.Equal(t, []string{"SHORT_PASSWORD"}, r.Skipped())
}

func TestSecretName(t *testing.T) {
	for name, want := range map[string]bool{
		"AWS_SECRET_ACCESS_KEY": true, "AWS_SESSION_TOKEN": true, "GRAPE_GIT_TOKEN": true, "VAULT_TOKEN": true,
		"DB_PASSWORD": true, "tf_var_admin_password": true, "CLIENT_SECRET": true, "MY_SECRET_THING": true,
		"TLS_PRIVATE_KEY": true, "PGPASSWORD": true, "SECRET": true,
		"AWS_ACCESS_KEY_ID": false, "PATH": false, "TOKENIZER": false, "PASSWORD_POLICY": false, "AWS_REGION": false,
	} {
		require.Equal(t, want, redact.SecretName(name), name)
	}
}

// SafeCut must give a cut at which redacting the two halves apart equals
// redacting the whole, for every requested position.
func TestSafeCut(t *testing.T) {
	r := redact.New(0, "first-secret", "secret-second-one", canary)
	text := "aa first-secret-second-one bb " + canary + " cc " + base64.StdEncoding.EncodeToString([]byte("xy"+canary)) + " dd"
	whole := r.Redact(text)
	for n := 0; n <= len(text); n++ {
		k := r.SafeCut(text, n)
		require.Equal(t, whole, r.Redact(text[:k])+r.Redact(text[k:]), "n=%d k=%d", n, k)
		require.True(t, k <= n || strings.HasPrefix(r.Redact(text[:k]), redact.Mask), "k=%d beyond n=%d without a secret at 0", k, n)
	}
	require.Equal(t, len(base64.StdEncoding.EncodeToString([]byte(canary))), r.MaxLen(), "longest form: base64 of the canary")
}

// With must be safe while other goroutines redact (run with -race).
func TestConcurrentWithAndRedact(t *testing.T) {
	r := redact.New(0, "initial-secret")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// The redacting goroutines report a leak back; only the test goroutine
	// may fail the test.
	leaked := make(chan string, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					if out := r.Redact("x initial-secret y"); strings.Contains(out, "initial-secret") {
						leaked <- out
						return
					}
				}
			}
		}()
	}
	for i := range 50 {
		r.With(fmt.Sprintf("added-secret-%04d", i))
	}
	close(stop)
	wg.Wait()
	close(leaked)
	for out := range leaked {
		t.Errorf("a secret was not redacted while With ran: %q", out)
	}
	require.Equal(t, "***", r.Redact("added-secret-0049"))
}

// BenchmarkRedact measures the cost on every log line: an 80-byte line and
// 20 secrets of 20–40 bytes (each with ~20 encoded forms).
func BenchmarkRedact(b *testing.B) {
	var secrets []string
	for i := range 20 {
		secrets = append(secrets, randomHex(b, 10+i%11))
	}
	r := redact.New(0, secrets...)
	clean := "aws_instance.web[3]: Still creating... [1m20s elapsed] (id=i-0123456789abcdef01)"
	dirty := ("module.db.aws_db_instance.main: password = " + secrets[7] + " (sensitive)                      ")[:80]
	for _, bc := range []struct{ name, line string }{{"no_secret", clean}, {"one_secret", dirty}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.line)))
			for b.Loop() {
				_ = r.Redact(bc.line)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
		})
	}
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func randomHex(t testing.TB, n int) string { return hex.EncodeToString(randomBytes(t, n)) }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
