package localenv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// Moto is a running moto_server: an in-memory AWS API emulator on loopback.
type Moto struct {
	Port int
	URL  string
	cmd  *exec.Cmd
	port *PortReservation // held until Stop, so the port cannot change hands
	done chan struct{}
}

// MotoAccessKey and MotoSecretKey are what moto accepts; any value works, these
// are the documented dummies.
const (
	MotoAccessKey = "test"
	MotoSecretKey = "test"
)

// StartMoto starts moto_server on a free loopback port. Managed IAM policies
// are loaded, or attaching arn:aws:iam::aws:policy/... (EKS, Karpenter) fails.
// logPath receives moto's own output ("" discards it).
func StartMoto(ctx context.Context, logPath string) (*Moto, error) {
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		return nil, errors.New("moto_server not found on PATH: install it (pip install 'moto[server]') to run against the local AWS emulator")
	}
	port, err := ReservePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", strconv.Itoa(port.Port))
	cmd.Env = append(os.Environ(), "MOTO_IAM_LOAD_MANAGED_POLICIES=true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			port.Close()
			return nil, fmt.Errorf("opening moto log: %w", err)
		}
		defer f.Close() // the child keeps its own descriptor
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		port.Close()
		return nil, fmt.Errorf("starting moto_server: %w", err)
	}
	m := &Moto{Port: port.Port, URL: "http://" + port.Addr(), cmd: cmd, port: port, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(m.done) }()
	if err := m.waitReady(ctx); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

func (m *Moto) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(m.URL + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-m.done:
			return errors.New("moto_server exited during start-up (see its log)")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("moto_server on %s not ready after 60s: %w", m.URL, err)
		}
	}
}

// Env is what terraform and the AWS SDKs need to talk to this emulator.
func (m *Moto) Env(region string) map[string]string {
	return map[string]string{
		"AWS_ENDPOINT_URL":      m.URL,
		"AWS_ACCESS_KEY_ID":     MotoAccessKey,
		"AWS_SECRET_ACCESS_KEY": MotoSecretKey,
		"AWS_REGION":            region,
		"AWS_DEFAULT_REGION":    region,
	}
}

// Stop kills the emulator (its state is in memory only) and waits for it.
func (m *Moto) Stop() {
	if m.cmd.Process != nil {
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-m.done
	_ = m.port.Close()
}

// Running reports whether the process is still alive.
func (m *Moto) Running() bool {
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}
